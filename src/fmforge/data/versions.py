"""Dataset versions: ``DatasetVersionCommitted`` events on ``dataset/<name>`` and their projection.

A version records its parents and the transformation that made it (``add`` from files here;
cleaning, labelling, filtering and forgetting add their own kinds), the manifest of its table
and the objects it wrote. REFs: ``NAME`` or ``NAME@latest`` (the newest version), ``NAME@v3``
(the third), ``NAME@latest~1`` (the one before the newest), ``NAME@3fa9c2`` (a version id
prefix of 4 or more characters).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import pyarrow as pa

from fmforge.data.sources import read_source, text_encoding
from fmforge.data.storage import (
    load_manifest,
    load_table,
    row_ids,
    store_table,
)
from fmforge.errors import (
    DataError,
    DatasetConflict,
    DatasetNotFound,
    ObjectNotFound,
    SchemaClash,
    StreamVersionConflict,
)
from fmforge.ledger import Event, NewEvent, Projection, handles
from fmforge.objects.hashing import new_hasher
from fmforge.repository import Repository

STREAM_PREFIX = "dataset/"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}\Z")
_REF_RE = re.compile(r"(?P<base>latest|v\d+|[0-9a-f]{4,64})(?:~(?P<back>\d+))?\Z")
_SCHEMA = """
CREATE TABLE dataset_versions (
    version_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, number INTEGER NOT NULL,
    parents TEXT NOT NULL, manifest TEXT NOT NULL, rows INTEGER NOT NULL, columns TEXT NOT NULL,
    transformation TEXT NOT NULL, message TEXT NOT NULL, actor TEXT NOT NULL, time TEXT NOT NULL,
    UNIQUE (dataset, number)
)
"""


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    number: int
    id: str
    parents: tuple[str, ...]
    manifest: str
    rows: int
    columns: list[dict[str, str]]
    transformation: dict[str, Any]
    message: str
    actor: str = ""
    time: str = ""

    @property
    def ref(self) -> str:
        return f"{self.dataset}@v{self.number}"


@dataclass
class AddResult:
    version: DatasetVersion
    created: bool  # False: the table equals the newest version's; nothing was recorded
    added_columns: list[str] = field(default_factory=list)


class DatasetsView(Projection):
    name = "datasets"
    version = 1
    tables = ("dataset_versions",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(_SCHEMA)

    @handles("DatasetVersionCommitted")
    def committed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d["version"], d["dataset"], d["number"], json.dumps(d["parents"]), d["manifest"],
                d["rows"], json.dumps(d["columns"]), json.dumps(d["transformation"]),
                d["message"], str(event.meta.get("actor", "")), event.time,
            ),
        )  # fmt: skip


def _row(row: tuple[Any, ...]) -> DatasetVersion:
    vid, dataset, number, parents, manifest, rows, columns, transformation, message, actor, when = (
        row
    )
    return DatasetVersion(
        dataset, number, vid, tuple(json.loads(parents)), manifest, rows, json.loads(columns),
        json.loads(transformation), message, actor, when,
    )  # fmt: skip


def _db(repo: Repository) -> sqlite3.Connection:
    repo.views.run(DatasetsView())
    return repo.views.db


def validate_dataset_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise DatasetNotFound(
            f"invalid dataset name {name!r}: letters, digits and '._-', up to 128 characters"
        )
    return name


def dataset_log(repo: Repository, name: str) -> list[DatasetVersion]:
    """Every version of ``name``, newest first."""
    rows = _db(repo).execute(
        "SELECT * FROM dataset_versions WHERE dataset = ? ORDER BY number DESC", (name,)
    )
    versions = [_row(r) for r in rows]
    if not versions:
        raise DatasetNotFound(f"no dataset {name!r} (see `fmforge data ls`)")
    return versions


def list_datasets(repo: Repository) -> list[DatasetVersion]:
    """The newest version of every dataset."""
    rows = _db(repo).execute(
        "SELECT * FROM dataset_versions v WHERE number = "
        "(SELECT max(number) FROM dataset_versions WHERE dataset = v.dataset) ORDER BY dataset"
    )
    return [_row(r) for r in rows]


def resolve(repo: Repository, target: str) -> DatasetVersion:
    """The version a ``NAME[@REF]`` names."""
    name, _, ref = target.partition("@")
    versions = dataset_log(repo, validate_dataset_name(name))
    match = _REF_RE.match(ref or "latest")
    if match is None:
        raise DatasetNotFound(
            f"{target!r}: REF must be latest, vN, a version id prefix, each optionally ~N"
        )
    base, back = match["base"], int(match["back"] or 0)
    if base == "latest":
        index = 0
    elif base.startswith("v") and base[1:].isdigit():
        index = next((i for i, v in enumerate(versions) if v.number == int(base[1:])), -1)
    else:
        hits = [i for i, v in enumerate(versions) if v.id.startswith(base)]
        if len(hits) > 1:
            raise DatasetNotFound(f"{target!r}: the prefix names {len(hits)} versions")
        index = hits[0] if hits else -1
    if index < 0 or index + back >= len(versions):
        raise DatasetNotFound(f"{target!r}: no such version (see `fmforge data log {name}`)")
    return versions[index + back]


def read_table(repo: Repository, target: str, *, with_ids: bool = False) -> pa.Table:
    """The table of ``NAME[@REF]`` in its own row order (``_row_id`` first when asked)."""
    version = resolve(repo, target)
    manifest = load_manifest(repo.objects, version.manifest)
    try:
        table = load_table(repo.objects, manifest, with_ids=True)
    except ObjectNotFound:
        erased = repo.pruned_objects().intersection(c["digest"] for c in manifest["chunks"])
        if not erased:
            raise
        raise DataError(
            f"{version.ref} held rows that were later forgotten: {len(erased)} of its chunks "
            "were erased on purpose (see `fmforge data log`); read a newer version"
        ) from None
    if with_ids:
        return table.select(["_row_id", *table.column_names[:-1]])
    return table.drop_columns(["_row_id"])


def add_dataset(
    repo: Repository,
    name: str,
    source: Path,
    *,
    message: str | None = None,
    allow_schema_change: bool = False,
    encoding: str | None = None,
) -> AddResult:
    """Record the rows of ``source`` (CSV, JSONL, Parquet, or a directory of them) as the next
    version of ``name``. Refused, with nothing recorded, when the files cannot be read or their
    columns clash with the previous version's (unless ``allow_schema_change``). ``encoding``:
    the text files' encoding when it is not UTF-8 (UTF-16/32 with a byte-order mark are found);
    each text file's is recorded with its path, size and digest."""
    validate_dataset_name(name)
    table = read_source(source, encoding)
    files = sorted(source.rglob("*")) if source.is_dir() else [source]
    sources = []
    for f in files:
        if f.is_file():
            entry: dict[str, Any] = {
                "path": str(f),
                "bytes": f.stat().st_size,
                "blake3": _file_digest(f),
            }
            read_as = text_encoding(f, encoding)
            if read_as is not None:
                entry["encoding"] = read_as
            sources.append(entry)
    return commit_table(
        repo, name, table, row_ids(table),
        transformation={"kind": "add", "sources": sources},
        message=message or f"add {source.name}", allow_schema_change=allow_schema_change,
    )  # fmt: skip


def _file_digest(path: Path) -> str:
    hasher = new_hasher(path.stat().st_size)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return str(hasher.hexdigest())


def commit_table(
    repo: Repository,
    name: str,
    table: pa.Table,
    ids: list[str],
    *,
    transformation: dict[str, Any],
    message: str,
    allow_schema_change: bool = False,
    parents: tuple[str, ...] | None = None,
    extra_refs: tuple[str, ...] = (),
) -> AddResult:
    """Record ``table`` (rows identified by ``ids``) as the next version of ``name``; its parent
    is the newest version unless ``parents`` says otherwise. ``extra_refs``: other objects the
    version's event points at (e.g. a cleaning's changes)."""
    stream = STREAM_PREFIX + name
    expected = repo.ledger.stream_version(stream)
    try:
        previous: DatasetVersion | None = dataset_log(repo, name)[0]
    except DatasetNotFound:
        previous = None
    added = _check_schema(name, previous, table.schema, allow_schema_change)
    stored = store_table(repo.objects, table, ids)
    if previous is not None and previous.manifest == stored.manifest:
        return AddResult(previous, created=False)
    number = previous.number + 1 if previous else 1
    parents = parents if parents is not None else ((previous.id,) if previous else ())
    version_id = blake3.blake3(
        f"{name}\0{number}\0{stored.manifest}\0{','.join(parents)}".encode()
    ).hexdigest()
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    data = {
        "dataset": name, "number": number, "version": version_id, "parents": list(parents),
        "manifest": stored.manifest, "rows": stored.rows, "columns": columns,
        "transformation": transformation, "message": message,
    }  # fmt: skip
    refs = tuple(dict.fromkeys(stored.new_objects + extra_refs))
    event = NewEvent("DatasetVersionCommitted", data, refs=refs)
    try:
        repo.ledger.append(stream, event, expected_version=expected)
    except StreamVersionConflict:
        raise DatasetConflict(
            f"another version of {name!r} was recorded meanwhile; nothing was recorded "
            "(look at `fmforge data log` and try again)"
        ) from None
    version = resolve(repo, f"{name}@v{number}")
    return AddResult(version, created=True, added_columns=added)


def _check_schema(
    name: str, previous: DatasetVersion | None, schema: pa.Schema, allow: bool
) -> list[str]:
    """Columns added since ``previous``; a removed or retyped column is a clash."""
    if previous is None:
        return []
    before = {c["name"]: c["type"] for c in previous.columns}
    now = {f.name: str(f.type) for f in schema}
    problems = [f"column {c!r} is missing (was {t})" for c, t in before.items() if c not in now]
    problems += [
        f"column {c!r} is {now[c]} (was {t})" for c, t in before.items() if c in now and now[c] != t
    ]
    if problems and not allow:
        raise SchemaClash(
            f"{name}: the new version's columns clash with {previous.ref}: "
            + "; ".join(problems)
            + " (pass --allow-schema-change if that is intended)"
        )
    return [c for c in now if c not in before]


def merge_datasets(
    repo: Repository, name: str, sources: list[str], *, message: str | None = None
) -> AddResult:
    """Record the rows of several versions (``NAME@REF`` each, the same columns) as the next
    version of ``name``, whose parents they all are. A record held by more than one source is
    kept once: its id is the same in each."""
    if len(sources) < 2:
        raise DataError("merge needs two or more NAME@REF sources")
    versions = [resolve(repo, source) for source in sources]
    tables = [read_table(repo, v.ref, with_ids=True) for v in versions]
    first = tables[0].schema
    for version, table in zip(versions[1:], tables[1:], strict=True):
        if not table.schema.equals(first):
            raise SchemaClash(
                f"{version.ref}'s columns differ from {versions[0].ref}'s: merge needs the same"
            )
    merged = pa.concat_tables(tables)
    ids = merged.column("_row_id").to_pylist()
    seen: set[str] = set()
    keep = []
    for row_id in ids:
        keep.append(row_id not in seen)
        seen.add(row_id)
    merged = merged.filter(pa.array(keep))
    return commit_table(
        repo, validate_dataset_name(name), merged.drop_columns(["_row_id"]),
        merged.column("_row_id").to_pylist(),
        transformation={"kind": "merge", "sources": [v.id for v in versions],
                        "refs": [v.ref for v in versions], "duplicates": len(ids) - len(seen)},
        message=message or "merge " + ", ".join(v.ref for v in versions),
        parents=tuple(dict.fromkeys(v.id for v in versions)),
    )  # fmt: skip
