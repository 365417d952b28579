"""A run's files (MLflow's artifacts): bytes in the object store, each named by an event.

``store_artifact`` puts the bytes in the object store, then records ``ArtifactLogged`` (path,
digest, size; the digest is the event's ref, so gc keeps it) on the owner's stream: a run
(``run/<id>``) or an MLflow logged model (``logged-model/<id>``). A later file at the same path
replaces the earlier one; ``ArtifactDeleted`` removes a file or a folder. ``ArtifactsView``
indexes the files each owner has now, so a folder listing is one query.

Paths are relative and ``/``-separated, as MLflow writes them; ``check_artifact_path`` refuses
anything that is not (an absolute path, ``..``, an empty part), naming the problem.
"""

from __future__ import annotations

import os
import posixpath
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fmforge.errors import InvalidRequest
from fmforge.ledger import Event, Projection, handles
from fmforge.repository import Repository
from fmforge.tracking.events import ArtifactDeleted, ArtifactLogged

MAX_PATH = 1000


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class ArtifactEntry:
    """One entry of a folder listing: a file (with its size) or a folder."""

    path: str
    is_dir: bool
    size: int | None


def check_artifact_path(path: str, *, allow_empty: bool = False) -> str:
    """``path`` as a relative, normalised ``/``-separated path, or ``InvalidRequest``."""
    text = path.strip("/") if allow_empty else path
    if allow_empty and not text:
        return ""
    problem = None
    if not text or len(text) > MAX_PATH:
        problem = f"must be 1-{MAX_PATH} characters"
    elif "\\" in text or "\x00" in text or not text.isprintable():
        problem = "must be printable, '/'-separated, without backslashes"
    elif (
        text.startswith("/")
        or posixpath.normpath(text) != text.rstrip("/")
        or any(part in ("", ".", "..") for part in text.rstrip("/").split("/"))
    ):
        problem = "must be relative, without '.', '..' or empty parts"
    if problem:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidRequest(f"artifact path {shown!r} {problem}")
    return text.rstrip("/")


def store_artifact(
    repo: Repository,
    stream: str,
    path: str,
    source: Path | bytes | BinaryIO,
    *,
    actor: str | None = None,
) -> ArtifactFile:
    """Store ``source``'s bytes as the artifact ``path`` of the owner ``stream``."""
    path = check_artifact_path(path)
    digest = repo.objects.put(source)
    size = repo.objects.size(digest)
    repo.record(
        stream,
        ArtifactLogged({"path": path, "digest": digest, "size": size}, refs=(digest,)),
        actor=actor,
    )
    return ArtifactFile(path, digest, size)


def store_tree(
    repo: Repository, stream: str, local: Path, prefix: str = "", *, actor: str | None = None
) -> list[ArtifactFile]:
    """``local`` (a file, or every file under a folder) as artifacts under ``prefix``."""
    prefix = check_artifact_path(prefix, allow_empty=True)
    if local.is_file():
        return [store_artifact(repo, stream, _join(prefix, local.name), local, actor=actor)]
    if not local.is_dir():
        raise InvalidRequest(f"{local}: no such file or folder")
    stored = []
    for file in sorted(_walk(local)):
        relative = file.relative_to(local).as_posix()
        stored.append(store_artifact(repo, stream, _join(prefix, relative), file, actor=actor))
    return stored


def delete_artifact(repo: Repository, stream: str, path: str, *, actor: str | None = None) -> None:
    repo.record(stream, ArtifactDeleted({"path": check_artifact_path(path)}), actor=actor)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _walk(root: Path) -> Iterator[Path]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            yield Path(folder) / name


class ArtifactIndex:
    """The query side of ``ArtifactsView``; ``owner`` is a stream (``run/<id>``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def file(self, owner: str, path: str) -> ArtifactFile | None:
        row = self.db.execute(
            "SELECT digest, size FROM artifacts WHERE owner = ? AND path = ?", (owner, path)
        ).fetchone()
        return None if row is None else ArtifactFile(path, row[0], row[1])

    def files(self, owner: str, prefix: str = "") -> list[ArtifactFile]:
        """Every file at or under ``prefix`` (all of the owner's when empty), by path."""
        rows = self.db.execute(
            "SELECT path, digest, size FROM artifacts WHERE owner = ? AND (? = '' OR path = ? "
            "OR substr(path, 1, length(?) + 1) = ? || '/') ORDER BY path",
            (owner, prefix, prefix, prefix, prefix),
        )
        return [ArtifactFile(*row) for row in rows]

    def listing(self, owner: str, folder: str = "") -> list[ArtifactEntry]:
        """The entries directly inside ``folder`` (MLflow's ``list_artifacts``): files with
        their sizes, then each sub-folder once."""
        entries: dict[str, ArtifactEntry] = {}
        base = f"{folder}/" if folder else ""
        for file in self.files(owner, folder):
            if file.path == folder:
                continue  # a file, not a folder: nothing is inside it
            rest = file.path[len(base) :]
            head, slash, _ = rest.partition("/")
            if slash:
                entries.setdefault(head, ArtifactEntry(base + head, True, None))
            else:
                entries[head] = ArtifactEntry(file.path, False, file.size)
        return sorted(entries.values(), key=lambda e: e.path)

    def owners_with_files(self, owners: list[str]) -> dict[str, int]:
        """How many files each of ``owners`` has (those with none are absent)."""
        if not owners:
            return {}
        marks = ",".join("?" * len(owners))
        rows = self.db.execute(
            f"SELECT owner, count(*) FROM artifacts WHERE owner IN ({marks}) GROUP BY owner",
            owners,
        )
        return {owner: count for owner, count in rows}


class ArtifactsView(Projection[ArtifactIndex]):
    name = "artifacts"
    tables = ("artifacts",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE artifacts (owner TEXT NOT NULL, path TEXT NOT NULL, digest TEXT NOT "
            "NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (owner, path))"
        )

    def read(self, db: sqlite3.Connection) -> ArtifactIndex:
        return ArtifactIndex(db)

    @handles("ArtifactLogged")
    def logged(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        # A file replaces the folder of the same name, as on a disk.
        db.execute(
            "DELETE FROM artifacts WHERE owner = ? AND substr(path, 1, length(?) + 1) = ? || '/'",
            (event.stream, d["path"], d["path"]),
        )
        db.execute(
            "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
            (event.stream, d["path"], d["digest"], d["size"], event.seq),
        )

    @handles("ArtifactDeleted")
    def deleted(self, db: sqlite3.Connection, event: Event) -> None:
        path = event.data["path"]
        db.execute(
            "DELETE FROM artifacts WHERE owner = ? AND (path = ? OR "
            "substr(path, 1, length(?) + 1) = ? || '/')",
            (event.stream, path, path, path),
        )
