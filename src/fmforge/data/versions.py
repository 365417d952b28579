"""Dataset versions: ``DatasetVersionCommitted`` events on ``dataset/<name>`` and their projection.

A version records its parents and the transformation that made it (``add`` from files here;
cleaning, labelling, filtering and forgetting add their own kinds), the manifest of its table
and the objects it wrote. REFs: ``NAME`` or ``NAME@latest`` (the newest version), ``NAME@v3``
(the third), ``NAME@latest~1`` (the one before the newest), ``NAME@3fa9c2`` (a version id
prefix of 4 or more characters).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import pyarrow as pa

from fmforge.access import targets
from fmforge.access.cells import present, sealer
from fmforge.access.mediation import Need, mediated
from fmforge.data.events import DatasetVersionCommitted
from fmforge.data.names import validate_dataset_name
from fmforge.data.sources import Source, text_encoding
from fmforge.data.storage import StoredTable, load_manifest, load_table
from fmforge.data.views import DatasetsView, DatasetVersion
from fmforge.data.writer import TableWriter
from fmforge.errors import (
    DataError,
    DatasetConflict,
    DatasetNotFound,
    ObjectNotFound,
    SchemaClash,
    StreamVersionConflict,
    ViewMismatch,
)
from fmforge.hints import did_you_mean
from fmforge.objects.hashing import new_hasher
from fmforge.repository import Repository

STREAM_PREFIX = "dataset/"
_REF_RE = re.compile(r"(?P<base>latest|v\d+|[0-9a-f]{4,64})(?:~(?P<back>\d+))?\Z")


@dataclass
class AddResult:
    version: DatasetVersion
    created: bool  # False: the table equals the newest version's; nothing was recorded
    added_columns: list[str] = field(default_factory=list)


@mediated("read_meta", targets.dataset_name())
def dataset_log(repo: Repository, name: str) -> list[DatasetVersion]:
    """Every version of ``name``, newest first."""
    view = repo.view(DatasetsView)
    versions = view.versions(validate_dataset_name(name))
    if not versions:
        hint = did_you_mean(name, [v.dataset for v in view.newest()])
        raise DatasetNotFound(f"no dataset {name!r}{hint} (see `fmforge data ls`)")
    return versions


@mediated("list", targets.fixed("dataset"))
def list_datasets(repo: Repository) -> list[DatasetVersion]:
    """The newest version of every dataset."""
    return repo.view(DatasetsView).newest()


@mediated("read_meta", targets.dataset())
def resolve(repo: Repository, target: str) -> DatasetVersion:
    """The version a ``NAME[@REF]`` names."""
    name = target.partition("@")[0]
    versions = dataset_log(repo, validate_dataset_name(name))
    return versions[_pick(target, [(v.number, v.id) for v in versions])]


def _pick(target: str, versions: list[tuple[int, str]]) -> int:
    """The position in ``versions`` (number, id; newest first) that ``NAME@REF`` names."""
    name, _, ref = target.partition("@")
    match = _REF_RE.match(ref or "latest")
    if match is None:
        hint = did_you_mean(ref.partition("~")[0], ["latest", *(f"v{n}" for n, _ in versions)])
        raise DatasetNotFound(
            f"{target!r}: REF must be latest, vN, a version id prefix, each optionally ~N{hint}"
        )
    base, back = match["base"], int(match["back"] or 0)
    if base == "latest":
        index = 0
    elif base.startswith("v") and base[1:].isdigit():
        index = next((i for i, v in enumerate(versions) if v[0] == int(base[1:])), -1)
    else:
        hits = [i for i, v in enumerate(versions) if v[1].startswith(base)]
        if len(hits) > 1:
            raise DatasetNotFound(f"{target!r}: the prefix names {len(hits)} versions")
        index = hits[0] if hits else -1
    if index < 0:
        hint = did_you_mean(base, ["latest", *(f"v{number}" for number, _ in versions)])
        raise DatasetNotFound(f"{target!r}: no such version{hint} (see `fmforge data log {name}`)")
    if index + back >= len(versions):
        raise DatasetNotFound(f"{target!r}: no such version (see `fmforge data log {name}`)")
    return index + back


def confirm(repo: Repository, target: str, version: DatasetVersion) -> None:
    """Raise ``ViewMismatch`` unless the ledger resolves ``target`` to ``version`` (the same
    id and manifest) as the view did."""
    stream = STREAM_PREFIX + version.dataset
    recorded = [
        e.data
        for e in repo.ledger.read_all(types=["DatasetVersionCommitted"], streams=stream)
        if e.stream == stream
    ]
    recorded.sort(key=lambda d: -int(d["number"]))
    try:
        found: dict[str, Any] | None = recorded[
            _pick(target, [(d["number"], d["version"]) for d in recorded])
        ]
    except DatasetNotFound:
        found = None
    if found is None or found["version"] != version.id or found["manifest"] != version.manifest:
        where = f"v{found['number']}" if found else "nothing"
        raise ViewMismatch(
            "datasets", f"{target} is {version.ref} in the view, {where} in the ledger"
        )


@mediated("read", targets.dataset())
def read_table(repo: Repository, target: str, *, with_ids: bool = False) -> pa.Table:
    """The table of ``NAME[@REF]`` in its own row order (``_row_id`` first when asked), the
    view's resolution confirmed against the ledger first; as the caller may see it
    (``fmforge.access.cells.present``: masked, decrypted, forgotten subjects dropped)."""
    version, manifest = open_version(repo, target)
    with reading(repo, version, manifest):
        table = present(repo, version.dataset, load_table(repo.objects, manifest, with_ids=True))
    if with_ids:
        return table.select(["_row_id", *table.column_names[:-1]])
    return table.drop_columns(["_row_id"])


def open_version(repo: Repository, target: str) -> tuple[DatasetVersion, dict[str, Any]]:
    """The version ``NAME[@REF]`` names (confirmed against the ledger) and its manifest."""
    version = resolve(repo, target)
    confirm(repo, target, version)
    return version, load_manifest(repo.objects, version.manifest)


@contextmanager
def reading(repo: Repository, version: DatasetVersion, manifest: dict[str, Any]) -> Iterator[None]:
    """Reading ``version``'s chunks: one erased when its rows were forgotten is said so."""
    try:
        yield
    except ObjectNotFound:
        erased = repo.pruned_objects().intersection(c["digest"] for c in manifest["chunks"])
        if not erased:
            raise
        raise DataError(
            f"{version.ref} held rows that were later forgotten: {len(erased)} of its chunks "
            "were erased on purpose (see `fmforge data log`); read a newer version"
        ) from None


@mediated("write", targets.dataset_name())
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
    reader = Source(source, encoding)  # reads the files through: any refusal happens here
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
    return _commit(
        repo, name, reader.schema, lambda writer: _fill(writer, reader),
        transformation={"kind": "add", "sources": sources},
        message=message or f"add {source.name}", allow_schema_change=allow_schema_change,
    )  # fmt: skip


def _fill(writer: TableWriter, reader: Source) -> None:
    for batch in reader.batches():
        writer.add(batch)


def _file_digest(path: Path) -> str:
    hasher = new_hasher(path.stat().st_size)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return str(hasher.hexdigest())


@mediated("write", targets.dataset_name())
def commit_table(
    repo: Repository,
    name: str,
    table: pa.Table,
    ids: Sequence[str],
    *,
    transformation: dict[str, Any],
    message: str,
    allow_schema_change: bool = False,
    parents: tuple[str, ...] | None = None,
    extra_refs: tuple[str, ...] = (),
    avoid: Collection[str] = (),
) -> AddResult:
    """Record ``table`` (rows identified by ``ids``) as the next version of ``name``; its parent
    is the newest version unless ``parents`` says otherwise. ``extra_refs``: other objects the
    version's event points at (e.g. a cleaning's changes). The table is written against its
    parents (rows they hold are shared, not stored again); ``avoid``: ids of rows being
    forgotten, whose chunks the new version must not share."""
    return _commit(
        repo, name, table.schema, lambda writer: writer.add_table(table, ids),
        transformation=transformation, message=message,
        allow_schema_change=allow_schema_change, parents=parents, extra_refs=extra_refs,
        avoid=avoid,
    )  # fmt: skip


def _commit(
    repo: Repository,
    name: str,
    schema: pa.Schema,
    fill: Callable[[TableWriter], None],
    *,
    transformation: dict[str, Any],
    message: str,
    allow_schema_change: bool = False,
    parents: tuple[str, ...] | None = None,
    extra_refs: tuple[str, ...] = (),
    avoid: Collection[str] = (),
) -> AddResult:
    stream = STREAM_PREFIX + name
    expected = repo.ledger.stream_version(stream)
    try:
        previous: DatasetVersion | None = dataset_log(repo, name)[0]
    except DatasetNotFound:
        previous = None
    added = _check_schema(name, previous, schema, allow_schema_change)
    parents = parents if parents is not None else ((previous.id,) if previous else ())
    writer = TableWriter(repo.objects, schema, bases=_bases(repo, parents), avoid=avoid)
    sealing = sealer(repo, name, writer)  # personal data encrypted per subject, if declared
    fill(sealing or writer)  # type: ignore[arg-type]
    stored = writer.finish()
    if previous is not None and previous.manifest == stored.manifest:
        return AddResult(previous, created=False)
    if sealing is not None:
        subjects = sealing.finish(repo.objects)
        transformation = {**transformation, "subjects": subjects}
        extra_refs = (*extra_refs, subjects)
    return _record(
        repo, name, stored, previous, parents, expected,
        transformation=transformation, message=message, extra_refs=extra_refs, added=added,
    )  # fmt: skip


def _bases(repo: Repository, parents: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(manifest digest, manifest) of each parent version whose chunks are all still there."""
    index = repo.view(DatasetsView)
    pruned: set[str] | None = None
    out = []
    for parent in parents:
        version = index.by_id(parent)
        if version is None:
            continue
        manifest = load_manifest(repo.objects, version.manifest)
        if pruned is None:
            pruned = repo.pruned_objects()
        if not pruned.intersection(c["digest"] for c in manifest["chunks"]):
            out.append((version.manifest, manifest))
    return out


def _record(
    repo: Repository,
    name: str,
    stored: StoredTable,
    previous: DatasetVersion | None,
    parents: tuple[str, ...],
    expected: int,
    *,
    transformation: dict[str, Any],
    message: str,
    extra_refs: tuple[str, ...],
    added: list[str],
) -> AddResult:
    stream = STREAM_PREFIX + name
    number = previous.number + 1 if previous else 1
    version_id = blake3.blake3(
        f"{name}\0{number}\0{stored.manifest}\0{','.join(parents)}".encode()
    ).hexdigest()
    columns = [{"name": f.name, "type": str(f.type)} for f in stored.schema]
    data = {
        "dataset": name, "number": number, "version": version_id, "parents": list(parents),
        "manifest": stored.manifest, "rows": stored.rows, "columns": columns,
        "transformation": transformation, "message": message,
    }  # fmt: skip
    refs = tuple(dict.fromkeys(stored.new_objects + extra_refs))
    event = DatasetVersionCommitted(data, refs=refs)  # type: ignore[arg-type]
    try:
        repo.record(stream, event, expected_version=expected)
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


def _merge_needs(repo: Repository, args: Any) -> list[Need]:
    return [
        ("write", targets.dataset_name()(repo, args)),
        *[("read", targets.dataset_resource(repo, source)) for source in args["sources"]],
    ]


@mediated("write", _merge_needs)
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
