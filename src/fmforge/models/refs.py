"""Model history as a projection: commits, branches (with their moves), tags, stored tensors.

Everything here is rebuilt from the ledger's ``model/<name>`` streams; the tensor index is read
from each commit's manifest object. ``resolve`` turns a REF into a commit id:

    main | v1.0 (tag) | 3fa9c2 (commit id prefix) | main~3 (first parents) | main@{2026-11-01}
    (where the branch pointed at the end of that UTC day, or at an ISO time)
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import orjson

from fmforge.errors import ModelNotFound, RefNotFound
from fmforge.ledger import Event, Projection, handles
from fmforge.models.storage import StoredTensor
from fmforge.objects import ObjectStore

STREAM_PREFIX = "model/"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}\Z")
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


def validate_model_name(name: str) -> str:
    if not _NAME_RE.match(name) or name.endswith("/") or "//" in name:
        raise ModelNotFound(
            f"invalid model name {name!r}: letters, digits and '._-/', up to 128 characters"
        )
    return name


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


class ModelRefs(Projection):
    name = "model_refs"
    version = 2
    tables = (
        "model_commits",
        "model_branches",
        "model_branch_log",
        "model_tags",
        "model_tensors",
    )

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def create_tables(self, db: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    @handles("ModelCommitted")
    def committed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO model_commits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d["commit"], d["model"], json.dumps(d["parents"]), d["manifest"], d["message"],
                str(event.meta.get("actor", "")), event.time, event.seq,
                d["tensors"], d["raw_bytes"], d["stored_bytes"], d.get("base"),
            ),
        )  # fmt: skip
        manifest = orjson.loads(self.objects.get(d["manifest"]))
        db.executemany(
            "INSERT OR IGNORE INTO model_tensors VALUES (?, ?)",
            [(h, json.dumps(record)) for h, record in manifest["stored"].items()],
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
        db.execute("INSERT INTO model_tags VALUES (?, ?, ?)", (d["model"], d["tag"], d["commit"]))


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

    def all_commits(self, model: str) -> list[CommitInfo]:
        rows = self.db.execute(
            "SELECT * FROM model_commits WHERE model = ? ORDER BY seq DESC", (model,)
        )
        return [_commit_info(r) for r in rows]

    def resolve(self, model: str, ref: str) -> str:
        """The commit id a REF names (see the module docstring for the grammar)."""
        match = _REF_RE.match(ref.strip())
        if match is None:
            raise RefNotFound(f"cannot parse ref {ref!r} of model {model!r}")
        base, when, back = match["base"], match["when"], match["back"]
        if when is not None:
            commit = self._branch_at(model, base, when)
        else:
            commit = self._named(model, base)
        for _ in range(int(back or 0)):
            parents = self.commit(commit).parents
            if not parents:
                raise RefNotFound(f"{model}@{ref}: history is shorter than ~{back}")
            commit = parents[0]
        return commit

    def _named(self, model: str, name: str) -> str:
        if not self.db.execute(
            "SELECT 1 FROM model_commits WHERE model = ? LIMIT 1", (model,)
        ).fetchone():
            raise ModelNotFound(f"no model named {model!r} (see `fmforge model ls`)")
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
        raise RefNotFound(f"{model} has no branch, tag or commit {name!r}")

    def _branch_at(self, model: str, branch: str, when: str) -> str:
        moment = _parse_moment(when)
        row = self.db.execute(
            "SELECT commit_id FROM model_branch_log WHERE model = ? AND branch = ? AND time <= ? "
            "ORDER BY seq DESC LIMIT 1",
            (model, branch, moment),
        ).fetchone()
        if row is None:
            raise RefNotFound(f"{model}@{branch}@{{{when}}}: the branch did not exist then")
        return str(row[0])


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
