"""The access domain's read models: ``AccessView`` (principals, groups, tokens, grants and the
policy in force) and ``AccessLogView`` (every access decision, indexed by resource and by
principal over time).

``repo.view(AccessView)`` gives the current ``AccessState``; ``repo.view(AccessLogView)`` an
``AccessLog`` answering "who read dataset X between T1 and T2" and "what was denied to U" from
its indexes, in milliseconds over a million access events, without decoding the ledger;
``repo.view(AccessHistoryView)`` the access-control changes (the state at any past seq is their
replay) and the signed checkpoints.
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from fmforge.access.policy import PolicySpec, policy_from_json
from fmforge.access.principals import Principal
from fmforge.access.resources import parse_resource
from fmforge.access.state import STATE_TYPES, AccessState, Grant, replay, scopes_of
from fmforge.access.tokens import TokenRecord
from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_STATE_SCHEMA = """
CREATE TABLE access_principals (
    name TEXT PRIMARY KEY, attributes TEXT NOT NULL, disabled INTEGER NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE access_members (grp TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (grp, member));
CREATE TABLE access_tokens (
    token_id TEXT PRIMARY KEY, principal TEXT NOT NULL, sha256 TEXT NOT NULL, scopes TEXT NOT NULL,
    expires REAL, note TEXT NOT NULL, revoked INTEGER NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE access_grants (
    grant_id TEXT PRIMARY KEY, principal TEXT NOT NULL, resource TEXT NOT NULL,
    actions TEXT NOT NULL, role TEXT, seq INTEGER NOT NULL
);
CREATE TABLE access_policy (
    id INTEGER PRIMARY KEY CHECK (id = 1), policy TEXT NOT NULL, digest TEXT NOT NULL,
    seq INTEGER NOT NULL
);
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class AccessView(Projection[AccessState]):
    """Principals, groups, tokens, grants and policy, as of the newest event."""

    name = "access"
    tables = (
        "access_principals", "access_members", "access_tokens", "access_grants", "access_policy",
    )  # fmt: skip

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _STATE_SCHEMA)

    @handles("PrincipalCreated")
    def created(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO access_principals VALUES (?, ?, 0, ?)",
            (d["principal"], _dumps(d["attributes"]), event.seq),
        )

    @handles("PrincipalUpdated")
    def updated(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO access_principals VALUES (?, ?, ?, ?)",
            (d["principal"], _dumps(d["attributes"]), int(d["disabled"]), event.seq),
        )

    @handles("GroupMemberAdded")
    def joined(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute("INSERT OR IGNORE INTO access_members VALUES (?, ?)", (d["group"], d["member"]))

    @handles("GroupMemberRemoved")
    def left(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "DELETE FROM access_members WHERE grp = ? AND member = ?", (d["group"], d["member"])
        )

    @handles("TokenIssued")
    def issued(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO access_tokens VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (d["token_id"], d["principal"], d["sha256"], _dumps(d["scopes"]), d["expires"],
             d["note"], event.seq),
        )  # fmt: skip

    @handles("TokenRevoked")
    def revoked(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE access_tokens SET revoked = 1 WHERE token_id = ?", (event.data["token_id"],)
        )

    @handles("GrantAdded")
    def granted(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO access_grants VALUES (?, ?, ?, ?, ?, ?)",
            (d["grant_id"], d["principal"], d["resource"], _dumps(sorted(d["actions"])),
             d["role"], event.seq),
        )  # fmt: skip

    @handles("GrantRevoked")
    def ungranted(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute("DELETE FROM access_grants WHERE grant_id = ?", (event.data["grant_id"],))

    @handles("PolicySet")
    def policy_set(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO access_policy VALUES (1, ?, ?, ?)",
            (_dumps(d["policy"]), d["digest"], event.seq),
        )

    def read(self, db: sqlite3.Connection) -> AccessState:
        groups: dict[str, set[str]] = {}
        for group, member in db.execute("SELECT grp, member FROM access_members"):
            groups.setdefault(member, set()).add(group)
        principals = {
            name: Principal(
                name, orjson.loads(attrs), frozenset(groups.get(name, ())), bool(disabled)
            )
            for name, attrs, disabled in db.execute(
                "SELECT name, attributes, disabled FROM access_principals"
            )
        }
        grants = {
            gid: Grant(gid, principal, resource, frozenset(orjson.loads(actions)), role)
            for gid, principal, resource, actions, role in db.execute(
                "SELECT grant_id, principal, resource, actions, role FROM access_grants"
            )
        }
        tokens = {
            tid: TokenRecord(
                tid, principal, sha, scopes_of(orjson.loads(scopes)), expires, bool(gone), note
            )
            for tid, principal, sha, scopes, expires, note, gone in db.execute(
                "SELECT token_id, principal, sha256, scopes, expires, note, revoked "
                "FROM access_tokens"
            )
        }
        row = db.execute("SELECT policy, digest FROM access_policy").fetchone()
        policy = policy_from_json(orjson.loads(row[0])) if row else PolicySpec()
        (seq,) = db.execute(
            "SELECT position FROM projection_checkpoints WHERE name = ?", (self.name,)
        ).fetchone()
        return AccessState(principals, grants, tokens, policy, row[1] if row else "", int(seq))


_LOG_SCHEMA = """
CREATE TABLE access_log (
    seq INTEGER PRIMARY KEY, t REAL NOT NULL, principal TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, root TEXT NOT NULL, allowed INTEGER NOT NULL, reason TEXT NOT NULL,
    purpose TEXT, token_id TEXT
);
CREATE INDEX access_log_by_root ON access_log (root, t, allowed, action, principal);
CREATE INDEX access_log_by_principal ON access_log (principal, t, allowed);
"""


def epoch(iso: str) -> float:
    """An event's ISO UTC time as seconds since the epoch."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else 0.0


@dataclass(frozen=True, slots=True)
class AccessRecord:
    seq: int
    time: float
    principal: str
    action: str
    resource: str
    allowed: bool
    reason: str
    purpose: str | None
    token_id: str | None


@dataclass(frozen=True, slots=True)
class Reader:
    """One principal's reads of a resource in a window."""

    principal: str
    reads: int
    first: float
    last: float


READ_ACTIONS = ("read", "read_pii", "export", "use")


class AccessLog:
    """The query side of ``AccessLogView``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def who_read(
        self,
        resource: str,
        since: float = 0.0,
        until: float = float("inf"),
        actions: tuple[str, ...] = READ_ACTIONS,
    ) -> list[Reader]:
        """Every principal allowed to read ``resource`` (a root such as ``dataset/yt``, or a
        version ``dataset/yt@3``) between ``since`` and ``until`` (epoch seconds, until
        excluded), most reads first."""
        parsed = parse_resource(resource)
        marks = ",".join("?" * len(actions))
        sql = (
            "SELECT principal, count(*), min(t), max(t) FROM access_log "
            f"WHERE root = ? AND t >= ? AND t < ? AND allowed = 1 AND action IN ({marks})"
        )
        args: list[Any] = [parsed.root, since, min(until, 1e300), *actions]
        if parsed.base != parsed.root:
            sql += " AND (resource = ? OR resource LIKE ?)"
            args += [parsed.base, parsed.base.replace("%", "\\%") + "#%"]
            sql = sql.replace("LIKE ?", "LIKE ? ESCAPE '\\'")
        sql += " GROUP BY principal ORDER BY count(*) DESC, principal"
        return [Reader(*row) for row in self.db.execute(sql, args)]

    def denied(
        self,
        principal: str | None = None,
        since: float = 0.0,
        until: float = float("inf"),
        limit: int = 1000,
    ) -> list[AccessRecord]:
        """Denied requests, newest first, of one principal or of everyone."""
        sql = "SELECT * FROM access_log WHERE allowed = 0 AND t >= ? AND t < ?"
        args: list[Any] = [since, min(until, 1e300)]
        if principal is not None:
            sql += " AND principal = ?"
            args.append(principal)
        sql += " ORDER BY t DESC, seq DESC LIMIT ?"
        args.append(limit)
        return [_record(row) for row in self.db.execute(sql, args)]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM access_log").fetchone()[0])


def _record(row: tuple[Any, ...]) -> AccessRecord:
    seq, t, principal, action, resource, _root, allowed, reason, purpose, token_id = row
    return AccessRecord(seq, t, principal, action, resource, bool(allowed), reason, purpose,
                        token_id)  # fmt: skip


class AccessLogView(Projection[AccessLog]):
    """One row per ``AccessGranted`` / ``AccessDenied``, indexed by (root, time) and by
    (principal, time)."""

    name = "access_log"
    tables = ("access_log",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _LOG_SCHEMA)

    def read(self, db: sqlite3.Connection) -> AccessLog:
        return AccessLog(db)

    @handles("AccessGranted", "AccessDenied")
    def decided(self, db: sqlite3.Connection, event: Event) -> None:
        self.apply_batch(db, [event])

    def apply_batch(self, db: sqlite3.Connection, events: list[Event]) -> None:
        rows = []
        for event in events:
            d = event.data
            rows.append((
                event.seq, epoch(event.time), d["principal"], d["action"], d["resource"],
                parse_resource(d["resource"]).root, int(event.type == "AccessGranted"),
                d["reason"], d["purpose"], d["token_id"],
            ))  # fmt: skip
        db.executemany("INSERT INTO access_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


_HISTORY_SCHEMA = """
CREATE TABLE access_history (
    seq INTEGER PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE access_checkpoints (
    size INTEGER NOT NULL, seq INTEGER PRIMARY KEY, t REAL NOT NULL, origin TEXT NOT NULL,
    root TEXT NOT NULL, note TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX access_checkpoints_by_size ON access_checkpoints (size);
"""


@dataclass(frozen=True, slots=True)
class RecordedCheckpoint:
    """A ``CheckpointSigned`` as recorded (its signature is checked by whoever reads it)."""

    seq: int
    time: float
    size: int
    origin: str
    root: bytes
    note: str
    reason: str


class AccessHistory:
    """The query side of ``AccessHistoryView``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def changes(self, after: int = 0, upto: int | None = None) -> list[tuple[int, str, Any]]:
        """(seq, type, payload) of the access-control changes after seq ``after`` (up to
        ``upto``), in order."""
        rows = self.db.execute(
            "SELECT seq, type, data FROM access_history WHERE seq > ? AND seq <= ? ORDER BY seq",
            (after, upto if upto is not None else 2**62),
        )
        return [(seq, kind, orjson.loads(data)) for seq, kind, data in rows]

    def state_at(self, seq: int) -> AccessState:
        """The access-control state in force just after event ``seq``."""
        return replay(self.changes(0, seq))

    def checkpoints(self, min_size: int = 0) -> list[RecordedCheckpoint]:
        """Recorded checkpoints covering at least ``min_size`` events, oldest first."""
        rows = self.db.execute(
            "SELECT seq, t, size, origin, root, note, reason FROM access_checkpoints "
            "WHERE size >= ? ORDER BY seq",
            (min_size,),
        )
        return [
            RecordedCheckpoint(seq, t, size, origin, base64.b64decode(root), note, reason)
            for seq, t, size, origin, root, note, reason in rows
        ]

    def last_checkpoint(self) -> RecordedCheckpoint | None:
        row = self.db.execute("SELECT max(seq) FROM access_checkpoints").fetchone()
        if row[0] is None:
            return None
        found = [c for c in self.checkpoints() if c.seq == row[0]]
        return found[0]


class AccessHistoryView(Projection[AccessHistory]):
    """Every access-control change, kept as it was recorded (the state at any seq is their
    replay), and every signed checkpoint."""

    name = "access_history"
    tables = ("access_history", "access_checkpoints")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _HISTORY_SCHEMA)

    def read(self, db: sqlite3.Connection) -> AccessHistory:
        return AccessHistory(db)

    @handles(*STATE_TYPES)
    def changed(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "INSERT INTO access_history VALUES (?, ?, ?)",
            (event.seq, event.type, _dumps(event.data)),
        )

    @handles("CheckpointSigned")
    def signed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO access_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
            (d["size"], event.seq, epoch(event.time), d["origin"], d["root"], d["note"],
             d["reason"]),
        )  # fmt: skip


class EndedSessions(Projection[set[str]]):
    """The dashboard sessions whose ``POST /logout`` is recorded (an ``AccessGranted`` with
    action ``logout`` naming the session): a logout holds across restarts and for every
    server process sharing the ledger."""

    name = "ended_sessions"
    tables = ("ended_sessions",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE ended_sessions (session TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    def read(self, db: sqlite3.Connection) -> set[str]:
        return {row[0] for row in db.execute("SELECT session FROM ended_sessions")}

    @handles("AccessGranted")
    def granted(self, db: sqlite3.Connection, event: Event) -> None:
        data = event.data
        if data.get("action") == "logout" and data.get("session"):
            db.execute(
                "INSERT OR IGNORE INTO ended_sessions VALUES (?, ?)", (data["session"], event.seq)
            )
