"""Reading tables stored in manifest format 1 (datasets written before format 2).

Format 1 sorted a table's rows by id and cut them into Parquet chunks after each id whose
leading 12 bits are zero; the manifest listed the chunks (digest, rows, first id) and an
``order`` object: the 16-byte ids in the table's own row order, zstd-compressed. Nothing
writes it any more; these functions read it back exactly as it was written.
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from fmforge.data.rowids import ID_BYTES, DigestIndex, id_digests
from fmforge.objects import ObjectStore

ROW_ID = "_row_id"


def order_digests(objects: ObjectStore, manifest: dict[str, Any]) -> np.ndarray:
    """The (rows, 16) uint8 ids in the table's own order."""
    raw = zstandard.ZstdDecompressor().decompress(objects.get(manifest["order"]))
    return np.frombuffer(raw, np.uint8).reshape(-1, ID_BYTES)


def manifest_ids(objects: ObjectStore, manifest: dict[str, Any]) -> list[str]:
    """The row ids in the table's own order."""
    return [row.tobytes().hex() for row in order_digests(objects, manifest)]


def load_table(objects: ObjectStore, manifest: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """The table in its own row order, with ``_row_id`` last (every chunk checked by hash)."""
    parts = [pq.read_table(io.BytesIO(objects.get(c["digest"]))) for c in manifest["chunks"]]
    full_schema = schema.append(pa.field(ROW_ID, pa.string()))
    stored = pa.concat_tables(parts).cast(full_schema) if parts else full_schema.empty_table()
    ids = manifest_ids(objects, manifest)
    position = {row_id: i for i, row_id in enumerate(stored.column(ROW_ID).to_pylist())}
    return stored.take(pa.array(np.fromiter((position[i] for i in ids), np.int64, len(ids))))


def runs(objects: ObjectStore, manifest: dict[str, Any]) -> np.ndarray:
    """The table's order as (chunk, start, count) runs over its id-sorted chunks."""
    ids = [
        pq.read_table(io.BytesIO(objects.get(c["digest"])), columns=[ROW_ID]).column(ROW_ID)
        for c in manifest["chunks"]
    ]
    sizes = [len(column) for column in ids]
    wanted = order_digests(objects, manifest)
    if len(wanted) == 0:
        return np.zeros((0, 3), np.int64)
    stored = id_digests(pa.chunked_array(ids, pa.string()))
    position = DigestIndex(stored, np.arange(len(stored))).lookup(wanted)
    starts = np.cumsum([0, *sizes])
    chunk = np.searchsorted(starts, position, "right") - 1
    return compress_runs(chunk, position - starts[chunk])


def compress_runs(chunk: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(chunk, start, count) runs of consecutive offsets within one chunk, in row order."""
    if len(chunk) == 0:
        return np.zeros((0, 3), np.int64)
    breaks = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(offset) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    counts = np.diff(np.concatenate([starts, [len(chunk)]]))
    return np.stack([chunk[starts], offset[starts], counts], axis=1).astype(np.int64)


def chunk_holding(manifest: dict[str, Any], row_id: str) -> str | None:
    """The chunk whose id range would hold ``row_id`` (chunks are sorted by their first id)."""
    firsts = [c["first"] for c in manifest["chunks"]]
    index = bisect.bisect_right(firsts, row_id) - 1
    return str(manifest["chunks"][index]["digest"]) if index >= 0 else None
