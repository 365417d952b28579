"""Personal data in dataset tables: sealed on the way in, presented on the way out.

A dataset declares (``fmforge data tag``) its personal-data columns (``pii``) and, for
erasure, the column naming each row's data subject (``subject_id``). Then:

- **in** (``Sealer``, wrapped around a version's ``TableWriter``): every ``pii`` cell, and
  the subject id itself, is stored encrypted under its subject's key
  (``fmforge.access.shredding``), bound to ``dataset|column|row id``: the chunk's Parquet
  holds ciphertext and its column statistics are computed on it. Row ids are computed on the
  plaintext record, as for any dataset, so a row keeps its id. The key ids of a version's
  subjects are kept in an object the version names (``transformation.subjects``): forgetting
  a subject flags exactly the versions that hold them.
- **out** (``present``, asked by each read entry point): the outermost call releases the
  rows as its decision allows: rows of forgotten subjects dropped (their key is gone), the
  columns the decision masks replaced by ``MASK`` (``null`` for columns that are not text),
  the other encrypted cells decrypted. Inside another call (a merge, a cleaning) cells pass
  through as stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fmforge.access.facts import AccessFactsView
from fmforge.access.mediation import current, gate
from fmforge.access.resources import format_resource
from fmforge.access.shredding import CELL_PREFIX, SubjectKeys
from fmforge.errors import InvalidDataSource

if TYPE_CHECKING:
    from fmforge.data.writer import TableWriter
    from fmforge.objects import ObjectStore
    from fmforge.repository import Repository

MASK = "***"
ROW_ID = "_row_id"
_IDENT = slice(len(CELL_PREFIX), len(CELL_PREFIX) + 32)
EVENTS_PER_RECORD = 1000


def declared(repo: Repository, dataset: str) -> dict[str, Any]:
    """What ``dataset`` declares about itself (``fmforge data tag``)."""
    try:
        resource = format_resource("dataset", dataset)
    except Exception:  # a name the grammar cannot hold declares nothing
        return {}
    return repo.view(AccessFactsView).attributes(resource)


def sealed_columns(attributes: dict[str, Any]) -> list[str]:
    """The columns stored encrypted: the pii columns and the subject id, when a subject id
    is declared."""
    subject = attributes.get("subject_id")
    if not subject:
        return []
    return list(dict.fromkeys([subject, *(attributes.get("pii_columns") or ())]))


def address(dataset: str, column: str, row_id: str) -> str:
    return f"{dataset}|{column}|{row_id}"


# ---- in -------------------------------------------------------------------------------------


class Sealer:
    """A ``TableWriter`` whose personal-data cells are encrypted per subject first."""

    def __init__(
        self, repo: Repository, dataset: str, writer: TableWriter, attributes: dict[str, Any]
    ) -> None:
        self.repo = repo
        self.dataset = dataset
        self.writer = writer
        self.subject = str(attributes["subject_id"])
        self.columns = sealed_columns(attributes)
        for name in self.columns:
            if name not in writer.schema.names:
                raise InvalidDataSource(
                    f"{dataset}: declared personal-data column {name!r} is not in the table "
                    f"(its columns: {', '.join(writer.schema.names)})"
                )
            kind = writer.schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise InvalidDataSource(
                    f"{dataset}: column {name!r} is {kind}; personal data of a dataset with a "
                    "subject id is stored encrypted, as text: give it as text"
                )
        self.keys: SubjectKeys = gate(repo).control.subject_keys()
        self.idents: set[str] = set()
        self.rows = 0

    def add(self, batch: pa.RecordBatch | pa.Table, ids: pa.Array | None = None) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if ROW_ID in table.column_names:
            table = table.drop_columns([ROW_ID])
        if not table.schema.equals(self.writer.schema):
            table = table.cast(self.writer.schema)
        if table.num_rows == 0:
            return
        if ids is None:
            from fmforge.data.rowids import hex_ids

            ids = hex_ids(self.writer.counter.digests(table))
        self.writer.add(self.seal(table, ids.to_pylist()), ids)

    def add_table(self, table: pa.Table, ids: Sequence[str] | pa.Array | None = None) -> None:
        from fmforge.data.writer import BATCH_ROWS

        column = None if ids is None else pa.array(ids, pa.string())
        for start in range(0, table.num_rows, BATCH_ROWS):
            part = table.slice(start, BATCH_ROWS)
            self.add(part, None if column is None else column.slice(start, BATCH_ROWS))

    def seal(self, table: pa.Table, ids: list[str]) -> pa.Table:
        subjects = table.column(self.subject).to_pylist()
        plain = [s for s in subjects if s is not None and not s.startswith(CELL_PREFIX)]
        for number, value in enumerate(subjects):
            if value is None or value == "":
                raise InvalidDataSource(
                    f"{self.dataset}: row {self.rows + number + 1} has no {self.subject!r}: "
                    "every row of a dataset with a subject id names its subject"
                )
        key_of = self._keys(sorted(set(plain)))
        for name in self.columns:
            position = table.schema.get_field_index(name)
            values = table.column(position).to_pylist()
            out: list[str | None] = []
            for value, subject, row_id in zip(values, subjects, ids, strict=True):
                if value is None or value.startswith(CELL_PREFIX):
                    out.append(value)
                    if value is not None:
                        self.idents.add(value[_IDENT])
                    continue
                key_id = key_of[subject]
                self.idents.add(key_id.removeprefix("subject:"))
                out.append(
                    self.keys.encrypt_cell(key_id, value, address(self.dataset, name, row_id))
                )
            table = table.set_column(
                position, table.schema.field(position), pa.array(out, pa.string())
            )
        self.rows += table.num_rows
        return table

    def _keys(self, subjects: list[str]) -> dict[str, str]:
        from fmforge.access import events as ev

        if not subjects:
            return {}
        key_of, created = self.keys.create_many(subjects)
        pseudonyms = {key_of[s]: self.keys.master.pseudonym(s) for s in subjects}
        for start in range(0, len(created), EVENTS_PER_RECORD):
            self.repo.record(
                ev.SUBJECTS,
                [
                    ev.SubjectKeyCreated({"key_id": k, "pseudonym": pseudonyms[k]})
                    for k in created[start : start + EVENTS_PER_RECORD]
                ],
            )
        return key_of

    def finish(self, objects: ObjectStore) -> str:
        """Store the version's subjects (sorted 16-byte key idents) as an object; its digest."""
        import zstandard

        packed = b"".join(bytes.fromhex(i) for i in sorted(self.idents))
        return objects.put(zstandard.ZstdCompressor(level=3).compress(packed), compress=False)


def sealer(repo: Repository, dataset: str, writer: TableWriter) -> Sealer | None:
    """A ``Sealer`` around ``writer`` when ``dataset`` declares a subject id, else None."""
    attributes = declared(repo, dataset)
    if not attributes.get("subject_id"):
        return None
    return Sealer(repo, dataset, writer, attributes)


def version_subjects(objects: ObjectStore, digest: str) -> np.ndarray:
    """The key idents (16 bytes each, sorted) a version's subjects object lists."""
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(objects.get(digest))
    return np.frombuffer(raw, np.uint8).reshape(-1, 16)


def holds_subject(objects: ObjectStore, digest: str, key_id: str) -> bool:
    found = version_subjects(objects, digest)
    wanted = np.frombuffer(bytes.fromhex(key_id.removeprefix("subject:")), np.uint8)
    if not len(found):
        return False
    view = found.view("S16").ravel()
    at = int(np.searchsorted(view, wanted.view("S16")[0]))
    return at < len(view) and view[at] == wanted.view("S16")[0]


# ---- out ------------------------------------------------------------------------------------


def presenting() -> bool:
    """Whether the read in progress releases rows (it is the outermost entry point)."""
    call = current()
    return call is None or not call.nested


def present(repo: Repository, dataset: str, table: pa.Table) -> pa.Table:
    """``table`` (rows of ``dataset``, with ``_row_id``) as the call in progress may see it
    (see the module docstring)."""
    call = current()
    if call is not None and call.nested:
        return table
    decision = call.decision if call is not None else None
    masked = set(decision.masked) if decision is not None else set()
    attributes = declared(repo, dataset)
    sealed = [c for c in sealed_columns(attributes) if c in table.column_names]
    if sealed and ROW_ID in table.column_names and table.num_rows:
        table = _drop_forgotten(repo, table, sealed)
    for name in table.column_names:
        if name in masked:
            table = _mask(table, name)
        elif name in sealed:
            table = _decrypt(repo, dataset, table, name)
    return table


def _idents(column: pa.ChunkedArray) -> pa.ChunkedArray:
    sealed = pc.starts_with(column, CELL_PREFIX)
    idents = pc.utf8_slice_codeunits(column, _IDENT.start, _IDENT.stop)
    return pc.if_else(sealed, idents, pa.scalar(None, pa.string()))


def _drop_forgotten(repo: Repository, table: pa.Table, sealed: list[str]) -> pa.Table:
    keys = gate(repo).control.subject_keys()
    gone = keys.destroyed()
    if not gone:
        return table
    idents = _idents(table.column(sealed[0]))
    doomed = pc.is_in(idents, pa.array(sorted(k.removeprefix("subject:") for k in gone)))
    keep = pc.invert(pc.fill_null(doomed, False))
    return table.filter(keep)


def _mask(table: pa.Table, name: str) -> pa.Table:
    position = table.schema.get_field_index(name)
    field = table.schema.field(position)
    column = table.column(position)
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        filled = pc.if_else(pc.is_null(column), pa.scalar(None, field.type),
                            pa.scalar(MASK, field.type))  # fmt: skip
    else:
        filled = pa.nulls(len(column), field.type)
    return table.set_column(position, field.with_nullable(True), filled)


def _decrypt(repo: Repository, dataset: str, table: pa.Table, name: str) -> pa.Table:
    keys = gate(repo).control.subject_keys()
    position = table.schema.get_field_index(name)
    values = table.column(position).to_pylist()
    ids = table.column(ROW_ID).to_pylist()
    out = [
        keys.decrypt_cell(v, address(dataset, name, i))
        if v is not None and v.startswith(CELL_PREFIX)
        else v
        for v, i in zip(values, ids, strict=True)
    ]
    return table.set_column(position, table.schema.field(position), pa.array(out, pa.string()))


def forgotten_versions(repo: Repository, key_id: str) -> Iterable[tuple[str, int]]:
    """(dataset, version number) of every version whose subjects include ``key_id``."""
    from fmforge.data.versions import dataset_log, list_datasets

    for latest in list_datasets(repo):
        for version in dataset_log(repo, latest.dataset):
            digest = version.transformation.get("subjects")
            if isinstance(digest, str) and holds_subject(repo.objects, digest, key_id):
                yield version.dataset, version.number
