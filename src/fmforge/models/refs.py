"""Model history as a projection: commits, branches (with their moves), tags, stored tensors.

Everything here is rebuilt from the ledger's ``model/<name>`` streams; the tensor index is read
from each commit's manifest object. Reached as ``repo.view(ModelRefs)``, which gives a
``RefIndex``. ``resolve`` turns a REF into a commit id:

    main | v1.0 (tag) | 3fa9c2 (commit id prefix) | main~3 (first parents) | main@{2026-11-01}
    (where the branch pointed at the end of that UTC day, or at an ISO time)
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import orjson

from fmforge.errors import ModelNotFound, ObjectNotFound, RefNotFound
from fmforge.hints import did_you_mean
from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements
from fmforge.models.names import validate_model_name
from fmforge.models.storage import StoredTensor

STREAM_PREFIX = "model/"
logger = logging.getLogger(__name__)
# executescript() would commit the runner's transaction, so statements run one by one.
_SCHEMA = """
CREATE TABLE model_commits (
    commit_id TEXT PRIMARY KEY, model TEXT NOT NULL, parents TEXT NOT NULL,
    manifest TEXT NOT NULL, message TEXT NOT NULL, actor TEXT NOT NULL,
    time TEXT NOT NULL, seq INTEGER NOT NULL, tensors INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL, stored_bytes INTEGER NOT NULL, base TEXT
);
CREATE INDEX model_commits_by_model ON model_commits (model, seq);
CREATE TABLE model_branches (
    model TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (model, branch)
);
CREATE TABLE model_branch_log (
    model TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL,
    time TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE INDEX model_branch_log_by_ref ON model_branch_log (model, branch, seq);
CREATE TABLE model_tags (
    model TEXT NOT NULL, tag TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (model, tag)
);
CREATE TABLE model_tensors (raw_hash TEXT PRIMARY KEY, record TEXT NOT NULL);
"""
_REF_RE = re.compile(r"(?P<base>[^~@]+)(?:@\{(?P<when>[^}]+)\})?(?:~(?P<back>\d+))?\Z")


def split_model_ref(text: str, default_ref: str = "main") -> tuple[str, str]:
    """``NAME@REF`` -> (NAME, REF); a bare NAME means ``NAME@main``."""
    name, sep, ref = text.partition("@")
    return validate_model_name(name), (ref if sep else default_ref)


@dataclass(frozen=True, slots=True)
class CommitInfo:
    model: str
    commit: str
    parents: tuple[str, ...]
    manifest: str
    message: str
    actor: str
    time: str
    seq: int
    tensors: int
    raw_bytes: int
    stored_bytes: int
    base: str | None = None  # "NAME@COMMIT" of the model an adapter adapts


class ModelRefs(Projection["RefIndex"]):
    name = "model_refs"
    version = 3
    tables = (
        "model_commits",
        "model_branches",
        "model_branch_log",
        "model_tags",
        "model_tensors",
    )

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> RefIndex:
        return RefIndex(db)

    @handles("ModelCommitted")
    def committed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        # The author made the commit (kept when it travels); the event's actor recorded it here.
        author = d.get("author") or event.meta.get("origin_actor") or event.meta.get("actor")
        db.execute(
            "INSERT OR IGNORE INTO model_commits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d["commit"], d["model"], json.dumps(d["parents"]), d["manifest"], d["message"],
                str(author or ""), event.time, event.seq,
                d["tensors"], d["raw_bytes"], d["stored_bytes"], d.get("base"),
            ),
        )  # fmt: skip
        assert self.objects is not None
        try:
            stored = orjson.loads(self.objects.get(d["manifest"]))["stored"]
            rows = [(str(h), json.dumps(record)) for h, record in stored.items()]
        except ObjectNotFound:
            return  # pruned by gc with its commit: its tensors are gone too
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            logger.warning("seq %d: manifest %s is not a manifest", event.seq, d["manifest"])
            return  # readers of this commit refuse it (its manifest does not parse)
        db.executemany("INSERT OR IGNORE INTO model_tensors VALUES (?, ?)", rows)

    @handles("BranchDeleted")
    def branch_deleted(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "DELETE FROM model_branches WHERE model = ? AND branch = ?", (d["model"], d["branch"])
        )

    @handles("BranchCreated", "BranchMoved")
    def branch_moved(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO model_branches VALUES (?, ?, ?)",
            (d["model"], d["branch"], d["commit"]),
        )
        db.execute(
            "INSERT INTO model_branch_log VALUES (?, ?, ?, ?, ?)",
            (d["model"], d["branch"], d["commit"], event.time, event.seq),
        )

    @handles("TagCreated")
    def tagged(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        # Tags never move: the first one recorded stands.
        db.execute(
            "INSERT OR IGNORE INTO model_tags VALUES (?, ?, ?)", (d["model"], d["tag"], d["commit"])
        )


class RefIndex:
    """Read-side queries over the ``ModelRefs`` tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def models(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT model FROM model_commits ORDER BY model")
        return [r[0] for r in rows]

    def branches(self, model: str) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT branch, commit_id FROM model_branches WHERE model = ? ORDER BY branch",
            (model,),
        )
        return dict(rows.fetchall())

    def tags(self, model: str) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT tag, commit_id FROM model_tags WHERE model = ? ORDER BY tag", (model,)
        )
        return dict(rows.fetchall())

    def commit(self, commit_id: str) -> CommitInfo:
        row = self.db.execute(
            "SELECT * FROM model_commits WHERE commit_id = ?", (commit_id,)
        ).fetchone()
        if row is None:
            raise RefNotFound(f"no commit {commit_id}")
        return _commit_info(row)

    def stored_tensor(self, raw_hash: str) -> StoredTensor | None:
        row = self.db.execute(
            "SELECT record FROM model_tensors WHERE raw_hash = ?", (raw_hash,)
        ).fetchone()
        return None if row is None else StoredTensor.from_record(json.loads(row[0]))

    def history(self, commit_id: str, limit: int | None = None) -> list[CommitInfo]:
        """First-parent history from ``commit_id``, newest first."""
        out: list[CommitInfo] = []
        current: str | None = commit_id
        while current is not None and (limit is None or len(out) < limit):
            info = self.commit(current)
            out.append(info)
            current = info.parents[0] if info.parents else None
        return out

    def branch_log(self, model: str, branch: str) -> list[tuple[str, str, int]]:
        """(commit, time, seq) of every position ``branch`` took, newest first."""
        rows = self.db.execute(
            "SELECT commit_id, time, seq FROM model_branch_log WHERE model = ? AND branch = ? "
            "ORDER BY seq DESC",
            (model, branch),
        )
        return [(str(c), str(t), int(s)) for c, t, s in rows]

    def default_branch(self, model: str) -> str | None:
        """``main`` if the model has it, else its oldest branch still standing."""
        branches = self.branches(model)
        if "main" in branches:
            return "main"
        row = self.db.execute(
            "SELECT l.branch FROM model_branch_log l JOIN model_branches b "
            "ON b.model = l.model AND b.branch = l.branch WHERE l.model = ? "
            "ORDER BY l.seq LIMIT 1",
            (model,),
        ).fetchone()
        return None if row is None else str(row[0])

    def ancestors(self, commit_id: str) -> set[str]:
        """``commit_id`` and every commit reachable from it through any parent."""
        seen: set[str] = set()
        stack = [commit_id]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            row = self.db.execute(
                "SELECT parents FROM model_commits WHERE commit_id = ?", (current,)
            ).fetchone()
            if row is not None:
                stack.extend(json.loads(row[0]))
        return seen

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether ``older`` is ``newer`` or reachable from it."""
        return older in self.ancestors(newer)

    def all_commits(self, model: str) -> list[CommitInfo]:
        rows = self.db.execute(
            "SELECT * FROM model_commits WHERE model = ? ORDER BY seq DESC", (model,)
        )
        return [_commit_info(r) for r in rows]

    def resolve(self, model: str, ref: str) -> str:
        """The commit id a REF names (see the module docstring for the grammar)."""
        if not self.db.execute(
            "SELECT 1 FROM model_commits WHERE model = ? LIMIT 1", (model,)
        ).fetchone():
            hint = did_you_mean(model, self.models())
            raise ModelNotFound(f"no model named {model!r}{hint} (see `fmforge model ls`)")
        return resolve_ref(
            model,
            ref,
            named=lambda name: self._named(model, name),
            branch_at=lambda branch, moment: self._branch_at(model, branch, moment),
            parents=lambda commit: self.commit(commit).parents,
        )

    def _named(self, model: str, name: str) -> str:
        branch = self.branches(model).get(name)
        if branch is not None:
            return branch
        tag = self.tags(model).get(name)
        if tag is not None:
            return tag
        if len(name) >= 4 and re.fullmatch(r"[0-9a-f]+", name):
            rows = self.db.execute(
                "SELECT commit_id FROM model_commits WHERE model = ? AND commit_id LIKE ?",
                (model, name + "%"),
            ).fetchall()
            if len(rows) == 1:
                return str(rows[0][0])
            if len(rows) > 1:
                raise RefNotFound(f"{model}@{name}: commit prefix matches {len(rows)} commits")
        hint = did_you_mean(name, [*self.branches(model), *self.tags(model)])
        raise RefNotFound(f"{model} has no branch, tag or commit {name!r}{hint}")

    def _branch_at(self, model: str, branch: str, moment: str) -> str | None:
        row = self.db.execute(
            "SELECT commit_id FROM model_branch_log WHERE model = ? AND branch = ? AND time <= ? "
            "ORDER BY seq DESC LIMIT 1",
            (model, branch, moment),
        ).fetchone()
        return None if row is None else str(row[0])


def resolve_ref(
    model: str,
    ref: str,
    *,
    named: Callable[[str], str],
    branch_at: Callable[[str, str], str | None],
    parents: Callable[[str], tuple[str, ...]],
) -> str:
    """The REF grammar, over any source of names, branch logs and parents (the view, or a
    model's history folded from the ledger: the two must agree)."""
    match = _REF_RE.match(ref.strip())
    if match is None:
        raise RefNotFound(f"cannot parse ref {ref!r} of model {model!r}")
    base, when, back = match["base"], match["when"], match["back"]
    if when is not None:
        found = branch_at(base, _parse_moment(when))
        if found is None:
            named(base)  # a branch that never existed: say so (with its closest names)
            raise RefNotFound(f"{model}@{base}@{{{when}}}: the branch did not exist then")
        commit = found
    else:
        commit = named(base)
    for _ in range(int(back or 0)):
        above = parents(commit)
        if not above:
            raise RefNotFound(f"{model}@{ref}: history is shorter than ~{back}")
        commit = above[0]
    return commit


def _commit_info(row: Any) -> CommitInfo:
    commit, model, parents, manifest, message, actor, when, seq, tensors, raw, stored, base = row
    return CommitInfo(
        model, commit, tuple(json.loads(parents)), manifest, message, actor, when, seq,
        tensors, raw, stored, base,
    )  # fmt: skip


def _parse_moment(text: str) -> str:
    """An ISO date (end of that UTC day) or datetime, as the ledger's time format."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            moment = datetime.combine(day.date(), time.max, UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC) + timedelta(0)
    except ValueError:
        raise RefNotFound(f"cannot read {text!r} as a date or ISO time") from None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
