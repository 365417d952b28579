"""Tables in the object store: row chunks shared between versions, a manifest each.

A row's id is the blake3 of its record (:mod:`fmforge.data.rowids`). A table is stored as
Parquet **chunks**, each holding some of its rows in table order with their ``_row_id``, and a
**manifest** (format 2) that lists them and says how the table is made of them:

- ``chunks``: per chunk its ``digest``, ``rows`` and ``stats`` (per column, the first 64,
  ``[min, max, nulls]``; min and max ``null`` where unknown: NaN or infinities, types without
  an order DuckDB and Python agree on; text truncated to 64 characters, a longer max dropped),
  and ``copied`` (below);
- ``runs``: the table's rows in order, as ``(chunk, start, count)`` runs over the chunks,
  stored as an object of little-endian uint32 triples, zstd-compressed; ``null`` when the table
  is every chunk whole, in the listed order;
- ``bases``: the manifests of the versions this one was written against.

A new version is written against its parents (:class:`fmforge.data.writer.TableWriter`): a
row a base already holds is referenced where the base holds it; the other rows are cut into
new chunks at content-defined boundaries over their ids in table order (a chunk ends after a
row whose id's low 11 bits are zero, once it holds 2,048 rows; at 16,384 it ends anyway), so
two writes of the same rows make the same chunks. An edit of 1% of the rows stores those rows,
the runs around them and a manifest: not a copy. Rows a base holds that had to be written again
(the base's chunk also holds a row being forgotten) go to chunks marked ``copied``: rows such a
chunk holds outside the base's own runs are the base's rows, the other new rows are not.

Chunk statistics let a filter skip chunks (:mod:`fmforge.data.pushdown`) and a sample read the
first chunk only. Manifests of format 1 (rows sorted by id, the order in a separate object of
16 bytes a row) are still read, exactly as before (:mod:`fmforge.data.storage_v1`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from fmforge.data import storage_v1
from fmforge.data.rowids import DigestIndex, id_digests, row_ids
from fmforge.errors import ObjectNotFound
from fmforge.objects import ObjectStore

__all__ = [
    "ROW_ID",
    "Layout",
    "RowLocator",
    "StoredTable",
    "chunk_ids",
    "layout",
    "load_manifest",
    "load_table",
    "manifest_ids",
    "manifest_schema",
    "read_rows",
    "row_ids",
]

ROW_ID = "_row_id"
FORMAT = 2


@dataclass(frozen=True)
class StoredTable:
    manifest: str  # digest of the manifest object
    rows: int
    schema: pa.Schema
    # The objects this version wrote, found already stored or not (the others it shares with
    # its bases): its event refers to them, so gc keeps them whichever write came first.
    new_objects: tuple[str, ...]


def load_manifest(objects: ObjectStore, digest: str) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads(objects.get(digest))
    return manifest


def manifest_schema(manifest: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"])))


def encode_runs(runs: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(runs.astype("<u4").tobytes())


def decode_runs(data: bytes) -> np.ndarray:
    raw = zstandard.ZstdDecompressor().decompress(data)
    return np.frombuffer(raw, "<u4").reshape(-1, 3).astype(np.int64)


@dataclass(frozen=True)
class Layout:
    """How a version's table is made of chunks: ``runs`` rows of (chunk, start, count), the
    chunk an index into ``chunks`` (the manifest's entries)."""

    chunks: list[dict[str, Any]]
    runs: np.ndarray
    bases: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.runs[:, 2].sum()) if len(self.runs) else 0

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row of the table, in order: its chunk (index) and its offset in that chunk."""
        counts = self.runs[:, 2]
        chunk = np.repeat(self.runs[:, 0], counts)
        start = np.repeat(self.runs[:, 1] - (np.cumsum(counts) - counts), counts)
        return chunk, start + np.arange(len(chunk), dtype=np.int64)

    def head(self, rows: int) -> np.ndarray:
        """The runs holding the first ``rows`` rows."""
        if rows <= 0:
            return self.runs[:0]
        ends = np.cumsum(self.runs[:, 2])
        last = int(np.searchsorted(ends, rows, "left"))
        head = self.runs[: last + 1].copy()
        if len(head) and ends[min(last, len(ends) - 1)] > rows:
            head[-1, 2] -= ends[last] - rows
        return head


def layout(objects: ObjectStore, manifest: dict[str, Any]) -> Layout:
    """The chunks and runs of a manifest of either format."""
    chunks = list(manifest["chunks"])
    if manifest.get("format", 1) == 1:
        return Layout(chunks, storage_v1.runs(objects, manifest))
    if manifest.get("runs") is None:
        runs = np.zeros((len(chunks), 3), np.int64)
        runs[:, 0] = np.arange(len(chunks))
        runs[:, 2] = np.fromiter((c["rows"] for c in chunks), np.int64, len(chunks))
    else:
        runs = decode_runs(objects.get(manifest["runs"]))
    return Layout(chunks, runs, tuple(manifest.get("bases", ())))


def chunk_ids(objects: ObjectStore, digest: str) -> pa.Array:
    """The ``_row_id`` column of one chunk (checked by hash)."""
    column = pq.read_table(io.BytesIO(objects.get(digest)), columns=[ROW_ID]).column(ROW_ID)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def read_rows(
    objects: ObjectStore,
    manifest: dict[str, Any],
    shape: Layout,
    runs: np.ndarray | None = None,
    *,
    columns: list[str] | None = None,
) -> pa.Table:
    """The rows ``runs`` (default: every run of ``shape``) name, in their order, with
    ``_row_id`` last. Only the chunks they use are read, each checked by hash."""
    runs = shape.runs if runs is None else runs
    full = manifest_schema(manifest).append(pa.field(ROW_ID, pa.string()))
    if columns is not None:
        full = pa.schema([full.field(name) for name in columns])
    needed = list(dict.fromkeys(int(c) for c in runs[:, 0])) if len(runs) else []
    ends = np.zeros(len(shape.chunks), np.int64)  # per chunk, the rows of it read
    np.maximum.at(ends, runs[:, 0], runs[:, 1] + runs[:, 2])
    parts, first = [], {}
    total = 0
    for chunk in needed:
        data = io.BytesIO(objects.get(shape.chunks[chunk]["digest"]))
        if ends[chunk] < shape.chunks[chunk]["rows"]:  # a head of the chunk: decode that only
            part = _head(data, int(ends[chunk]), columns)
        else:
            part = pq.read_table(data, columns=columns)
        first[chunk] = total
        total += part.num_rows
        parts.append(part)
    if not parts:
        return full.empty_table()
    whole = pa.concat_tables(parts).cast(full)
    if total == int(runs[:, 2].sum()) and _in_order(runs, shape, needed):
        return whole
    counts = runs[:, 2]
    starts = np.fromiter((first[int(c)] for c in runs[:, 0]), np.int64, len(runs)) + runs[:, 1]
    index = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    index += np.arange(len(index), dtype=np.int64)
    return whole.take(pa.array(index, pa.int64()))


def _head(data: io.BytesIO, rows: int, columns: list[str] | None) -> pa.Table:
    """The first ``rows`` rows of a Parquet file (batches end at row groups: gather them)."""
    batches = []
    count = 0
    for batch in pq.ParquetFile(data).iter_batches(batch_size=rows, columns=columns):
        batches.append(batch)
        count += batch.num_rows
        if count >= rows:
            break
    return pa.Table.from_batches(batches).slice(0, rows)


def _in_order(runs: np.ndarray, shape: Layout, needed: list[int]) -> bool:
    """Whether ``runs`` are the ``needed`` chunks whole, in order."""
    if len(runs) != len(needed):
        return False
    rows = np.array([shape.chunks[c]["rows"] for c in needed], np.int64)
    return bool(
        np.array_equal(runs[:, 0], needed)
        and not runs[:, 1].any()
        and np.array_equal(runs[:, 2], rows)
    )


def load_table(
    objects: ObjectStore, manifest: dict[str, Any], *, with_ids: bool = False
) -> pa.Table:
    """The version's table in its own row order (every chunk checked by hash)."""
    if manifest.get("format", 1) == 1:
        table = storage_v1.load_table(objects, manifest, manifest_schema(manifest))
    else:
        table = read_rows(objects, manifest, layout(objects, manifest))
    return table if with_ids else table.drop_columns([ROW_ID])


def manifest_ids(objects: ObjectStore, manifest: dict[str, Any]) -> list[str]:
    """The row ids in the table's own order (only the id column of each chunk is read)."""
    if manifest.get("format", 1) == 1:
        return storage_v1.manifest_ids(objects, manifest)
    shape = layout(objects, manifest)
    ids = read_rows(objects, manifest, shape, columns=[ROW_ID]).column(ROW_ID)
    return list(ids.to_pylist())


class RowLocator:
    """Where some rows are stored: the chunks holding them (at any offset, used by a version
    or not) and the ones a version holds. Each chunk's id column is read once."""

    def __init__(self, objects: ObjectStore, wanted: Iterable[str]) -> None:
        self.objects = objects
        self.ids = sorted(set(wanted))
        digests = id_digests(pa.array(self.ids, pa.string()))
        self.index = DigestIndex(digests, np.arange(len(self.ids)))
        self._found: dict[str, dict[int, str]] = {}

    def in_chunk(self, digest: str) -> dict[int, str]:
        """offset -> id of each wanted row the chunk holds; nothing for an erased chunk."""
        found = self._found.get(digest)
        if found is None:
            try:
                ids = id_digests(chunk_ids(self.objects, digest))
            except ObjectNotFound:
                ids = np.zeros((0, 16), np.uint8)
            position = self.index.lookup(ids)
            found = {int(o): self.ids[position[o]] for o in np.flatnonzero(position >= 0)}
            self._found[digest] = found
        return found

    def chunks(self, manifest: dict[str, Any]) -> dict[str, set[str]]:
        """The manifest's chunks that hold wanted rows (whether it uses them or not)."""
        if manifest.get("format", 1) == 1:
            return {digest: {row} for row, digest in self.held(manifest).items()}
        out = {}
        for entry in manifest["chunks"]:
            hits = self.in_chunk(entry["digest"])
            if hits:
                out[entry["digest"]] = set(hits.values())
        return out

    def held(self, manifest: dict[str, Any]) -> dict[str, str]:
        """id -> chunk digest of each wanted row the version holds (its chunk not erased)."""
        out = {}
        if manifest.get("format", 1) == 1:
            for row in self.ids:
                digest = storage_v1.chunk_holding(manifest, row)
                if digest is not None and row in self.in_chunk(digest).values():
                    out[row] = digest
            return out
        shape: Layout | None = None
        for number, entry in enumerate(manifest["chunks"]):
            hits = self.in_chunk(entry["digest"])
            if not hits:
                continue
            shape = shape or layout(self.objects, manifest)
            mine = shape.runs[shape.runs[:, 0] == number]
            for offset, row in hits.items():
                if ((mine[:, 1] <= offset) & (offset < mine[:, 1] + mine[:, 2])).any():
                    out[row] = entry["digest"]
        return out
