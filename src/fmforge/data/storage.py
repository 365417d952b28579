"""Tables in the object store: stable row ids, rows shared between versions, a manifest each.

A row's id is the blake3 of its record (column names and values, canonical JSON), so the same
record gets the same id in every version and in every dataset; the n-th repeat of a record
within one table gets ``#n`` mixed in, keeping ids unique. Rows are stored sorted by id and cut
into Parquet chunks where an id's leading bits are zero (content-defined boundaries, about
``ROWS_PER_CHUNK`` rows each): adding or removing a row rewrites only the chunk around it, so
versions share every other chunk. A version's manifest lists its chunks, its schema and an
``order`` object (the ids in the table's own row order), from which the table is rebuilt as it
was added.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from fmforge.objects import ObjectStore, hash_bytes

ROW_ID = "_row_id"
ROWS_PER_CHUNK = 4096
_ID_BYTES = 16
_MANIFEST_FORMAT = 1


def row_ids(table: pa.Table) -> list[str]:
    """The id of each row of ``table``: hex blake3 (128 bits) of the canonical record."""
    names = table.column_names
    seen: dict[bytes, int] = {}
    ids = []
    columns = [_canonical_values(table.column(n)) for n in names]
    for values in zip(*columns, strict=True):
        record = orjson.dumps(
            dict(zip(names, values, strict=True)), option=_CANONICAL, default=_bytes_as_hex
        )
        repeat = seen.get(record, 0)
        seen[record] = repeat + 1
        if repeat:
            record += b"#%d" % repeat
        ids.append(blake3.blake3(record).hexdigest(length=_ID_BYTES))
    return ids


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _canonical_values(column: pa.ChunkedArray) -> list[Any]:
    """Python values of a column, the same whatever else is installed: times and dates as
    Arrow's own text (to_pylist would give pandas Timestamps when pandas is importable)."""
    kind = column.type
    if pa.types.is_temporal(kind):
        return list(pc.cast(column, pa.string()).to_pylist())
    return list(column.to_pylist())


def _bytes_as_hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"a {type(value).__name__} value cannot be hashed as a record")


@dataclass(frozen=True)
class StoredTable:
    manifest: str  # digest of the manifest object
    rows: int
    schema: pa.Schema
    new_objects: tuple[str, ...]  # objects this version wrote (the others it shares)


def store_table(objects: ObjectStore, table: pa.Table, ids: Sequence[str]) -> StoredTable:
    """Write ``table`` (its rows identified by ``ids``) and return its manifest."""
    if ROW_ID in table.column_names:
        table = table.drop_columns([ROW_ID])
    with_ids = table.append_column(ROW_ID, pa.array(ids, pa.string()))
    by_id = with_ids.take(pc.sort_indices(with_ids, [(ROW_ID, "ascending")]))
    sorted_ids = by_id.column(ROW_ID).to_pylist()
    new: list[str] = []
    chunks = []
    for start, stop in _boundaries(sorted_ids):
        data = _parquet(by_id.slice(start, stop - start))
        new_object = _put(objects, data, new)
        first = sorted_ids[start] if stop > start else ""  # an empty table: one empty chunk
        chunks.append({"digest": new_object, "rows": stop - start, "first": first})
    order = zstandard.ZstdCompressor(level=3).compress(b"".join(bytes.fromhex(i) for i in ids))
    manifest = {
        "format": _MANIFEST_FORMAT,
        "rows": len(ids),
        "schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "chunks": chunks,
        "order": _put(objects, order, new),
    }
    digest = _put(objects, orjson.dumps(manifest), new)
    return StoredTable(digest, len(ids), table.schema, tuple(dict.fromkeys(new)))


def _boundaries(sorted_ids: list[str]) -> Iterable[tuple[int, int]]:
    """[start, stop) of each chunk: a chunk ends after an id whose leading 12 bits are zero."""
    start = 0
    for i, row_id in enumerate(sorted_ids):
        if row_id.startswith("000"):
            yield start, i + 1
            start = i + 1
    if start < len(sorted_ids) or not sorted_ids:
        yield start, len(sorted_ids)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=[ROW_ID])
    return sink.getvalue()


def _put(objects: ObjectStore, data: bytes, new: list[str]) -> str:
    """Store ``data`` unless it is there already; ``new`` collects what was written."""
    digest = hash_bytes(data)
    if not objects.has(digest):
        objects.put(data, compress=False)  # Parquet and zstd frames are compressed already
        new.append(digest)
    return digest


def load_manifest(objects: ObjectStore, digest: str) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads(objects.get(digest))
    return manifest


def manifest_schema(manifest: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"])))


def manifest_ids(objects: ObjectStore, manifest: dict[str, Any]) -> list[str]:
    """The row ids in the table's own order."""
    raw = zstandard.ZstdDecompressor().decompress(objects.get(manifest["order"]))
    return [raw[i : i + _ID_BYTES].hex() for i in range(0, len(raw), _ID_BYTES)]


def load_table(
    objects: ObjectStore, manifest: dict[str, Any], *, with_ids: bool = False
) -> pa.Table:
    """The version's table in its own row order (every chunk checked by hash on read)."""
    schema = manifest_schema(manifest)
    parts = [pq.read_table(io.BytesIO(objects.get(c["digest"]))) for c in manifest["chunks"]]
    full_schema = schema.append(pa.field(ROW_ID, pa.string()))
    stored = pa.concat_tables(parts).cast(full_schema) if parts else full_schema.empty_table()
    ids = manifest_ids(objects, manifest)
    position = {row_id: i for i, row_id in enumerate(stored.column(ROW_ID).to_pylist())}
    table = stored.take(pa.array(np.fromiter((position[i] for i in ids), np.int64, len(ids))))
    return table if with_ids else table.drop_columns([ROW_ID])
