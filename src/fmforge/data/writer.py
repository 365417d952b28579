"""Writing a version's table against its bases, a batch at a time (manifest format 2).

``TableWriter`` takes the table in record batches, in order, so memory stays bounded by the
batch, whatever the table's size (plus 16 bytes a row for the row-id counter and 24 for the
bases' index). Each batch's rows are looked up in the bases (the versions the new one is
written against, usually its parents): a row a base holds is referenced where the base holds
it; the others are appended to new chunks, cut where content-defined boundaries fall (see
:mod:`fmforge.data.storage`). ``finish`` writes the runs and the manifest; a table equal to
its only base, row for row, writes nothing and returns the base's manifest.

``avoid``: ids of rows being forgotten. A base chunk holding one of them is never referenced
(it is about to be erased); the rows the new table needs from it are written again, into
chunks marked ``copied``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmforge.data.rowids import DigestIndex, DigestMap, RowIds, hex_ids, id_digests
from fmforge.data.storage import (
    FORMAT,
    ROW_ID,
    StoredTable,
    chunk_ids,
    encode_runs,
    layout,
)
from fmforge.data.storage_v1 import compress_runs
from fmforge.objects import ObjectStore

MIN_ROWS = 2048
MAX_ROWS = 16384
CUT_MASK = 2047  # a chunk may end after a row whose id's low 11 bits are zero
BATCH_ROWS = 65536
STAT_TEXT = 64  # text statistics longer than this are truncated (min) or dropped (max)
STAT_COLUMNS = 64  # statistics of the first columns only: a manifest of a wide table stays small


class _Fresh:
    """Rows of one kind (new, or copied from a base) waiting to be cut into a chunk."""

    def __init__(self, copied: bool) -> None:
        self.copied = copied
        self.parts: list[pa.Table] = []
        self.rows = 0  # rows in the open chunk
        self.seq = 0  # the open chunk's number among this kind's

    @property
    def key(self) -> int:
        """The open chunk's provisional key (negative; resolved once it is written)."""
        return -(2 * self.seq + int(self.copied) + 1)


class TableWriter:
    def __init__(
        self,
        objects: ObjectStore,
        schema: pa.Schema,
        *,
        bases: Sequence[tuple[str, dict[str, Any]]] = (),
        avoid: Collection[str] = (),
    ) -> None:
        if ROW_ID in schema.names:
            schema = schema.remove(schema.get_field_index(ROW_ID))
        self.objects = objects
        self.schema = schema
        self.encoded = base64.b64encode(schema.serialize().to_pybytes()).decode()
        self.counter = RowIds()
        self.new: list[str] = []  # what this version's event refers to
        self.rows = 0
        self.entries: list[dict[str, Any]] = []  # by key: base chunks, then chunks written
        self.by_digest: dict[str, int] = {}
        self.resolved: dict[int, int] = {}  # provisional key -> key
        self.pieces: list[np.ndarray] = []
        self.fresh = (_Fresh(False), _Fresh(True))
        self.index: DigestMap | None = None
        self.avoided = np.zeros(0, bool)
        self.bases: list[str] = []
        self.same: np.ndarray | None = None  # the only base's rows, in order (keys, offsets)
        self.identical = False
        self._load(bases, avoid)

    def _load(self, bases: Sequence[tuple[str, dict[str, Any]]], avoid: Collection[str]) -> None:
        usable = [
            (digest, manifest)
            for digest, manifest in bases
            if manifest.get("format", 1) == FORMAT and manifest["schema"] == self.encoded
        ]
        if not usable:
            return
        shunned = DigestIndex(id_digests(pa.array(sorted(avoid), pa.string()))) if avoid else None
        avoided: list[bool] = []
        rows: list[np.ndarray] = []
        payloads: list[np.ndarray] = []
        for _, manifest in usable:
            shape = layout(self.objects, manifest)
            keys = []
            for entry in shape.chunks:
                key = self.by_digest.get(entry["digest"])
                if key is None:
                    key = self.by_digest[entry["digest"]] = len(self.entries)
                    self.entries.append({k: entry[k] for k in ("digest", "rows", "stats")})
                    avoided.append(False)
                keys.append(key)
            # The base's ids in its order, one chunk's id column at a time.
            runs = shape.runs
            at = np.cumsum(runs[:, 2]) - runs[:, 2]
            digests = np.empty((shape.rows, 16), np.uint8)
            for number in np.unique(runs[:, 0]):
                ids = id_digests(chunk_ids(self.objects, shape.chunks[number]["digest"]))
                if shunned is not None and (shunned.lookup(ids) >= 0).any():
                    avoided[keys[number]] = True
                for run in np.flatnonzero(runs[:, 0] == number):
                    start, count = runs[run, 1], runs[run, 2]
                    digests[at[run] : at[run] + count] = ids[start : start + count]
            # Each row's place, (key << 32) | offset, built a run at a time.
            firsts = (np.asarray(keys, np.int64)[runs[:, 0]] << 32) | runs[:, 1]
            payload = np.repeat(firsts - at, runs[:, 2])
            payload += np.arange(len(payload), dtype=np.int64)
            payloads.append(payload)
            rows.append(digests)
        self.avoided = np.asarray(avoided, bool)
        everything = rows[0] if len(rows) == 1 else np.concatenate(rows)
        del rows
        self.index = DigestMap(everything, np.concatenate(payloads))
        self.bases = [digest for digest, _ in usable]
        if len(usable) == 1:
            self.same, self.identical = payloads[0], True

    def add(self, batch: pa.RecordBatch | pa.Table, ids: pa.Array | None = None) -> None:
        """Append ``batch``'s rows (their ids computed here unless given)."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if ROW_ID in table.column_names:
            table = table.drop_columns([ROW_ID])
        if not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        count = table.num_rows
        if count == 0:
            return
        digests = self.counter.digests(table) if ids is None else id_digests(ids)
        table = table.append_column(ROW_ID, hex_ids(digests))
        key = np.full(count, -1, np.int64)
        offset = np.zeros(count, np.int64)
        copied = np.zeros(count, bool)
        if self.index is not None:
            found = self.index.lookup(digests)
            hit = found >= 0
            key[hit], offset[hit] = found[hit] >> 32, found[hit] & 0xFFFFFFFF
            copied = hit & self.avoided[np.maximum(key, 0)]
            key[copied] = -1
            if copied.any():
                self.identical = False
            if self.same is not None and self.identical:
                expected = self.same[self.rows : self.rows + count]
                self.identical = len(expected) == count and bool(np.array_equal(found, expected))
        else:
            self.identical = False
        for fresh, mask in ((self.fresh[0], (key < 0) & ~copied), (self.fresh[1], copied)):
            if mask.any():
                key[mask], offset[mask] = self._append(fresh, table.filter(mask), digests[mask])
        self.pieces.append(compress_runs(key, offset))
        self.rows += count

    def add_table(self, table: pa.Table, ids: Sequence[str] | pa.Array | None = None) -> None:
        """Append a whole table, a batch at a time."""
        column = None if ids is None else pa.array(ids, pa.string())
        for start in range(0, table.num_rows, BATCH_ROWS):
            part = table.slice(start, BATCH_ROWS)
            self.add(part, None if column is None else column.slice(start, BATCH_ROWS))

    def _append(
        self, fresh: _Fresh, rows: pa.Table, digests: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Append rows to ``fresh``'s open chunk, writing each chunk as a boundary closes it;
        their provisional keys and offsets."""
        count = rows.num_rows
        low = (digests[:, -2].astype(np.int64) << 8) | digests[:, -1]
        candidates = np.flatnonzero((low & CUT_MASK) == 0)
        keys = np.empty(count, np.int64)
        offsets = np.empty(count, np.int64)
        at = 0
        while at < count:
            earliest = at + max(MIN_ROWS - fresh.rows - 1, 0)
            found = int(np.searchsorted(candidates, earliest))
            cut = int(candidates[found]) if found < len(candidates) else count
            cut = min(cut, at + MAX_ROWS - fresh.rows - 1)
            end = min(cut + 1, count)
            keys[at:end] = fresh.key
            offsets[at:end] = fresh.rows + np.arange(end - at)
            fresh.parts.append(rows.slice(at, end - at))
            fresh.rows += end - at
            if cut < count:
                self._write(fresh)
            at = end
        return keys, offsets

    def _write(self, fresh: _Fresh) -> None:
        table = pa.concat_tables(fresh.parts)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        digest = self._put(sink.getvalue())
        key = self.by_digest.get(digest)
        if key is None:
            key = self.by_digest[digest] = len(self.entries)
            self.entries.append({"digest": digest, "rows": table.num_rows, "stats": stats(table)})
        if fresh.copied:
            self.entries[key]["copied"] = True
        self.resolved[fresh.key] = key
        fresh.parts, fresh.rows, fresh.seq = [], 0, fresh.seq + 1

    def finish(self) -> StoredTable:
        """Write the last chunks, the runs and the manifest."""
        for fresh in self.fresh:
            if fresh.rows:
                self._write(fresh)
        if self.same is not None and self.identical and self.rows == len(self.same):
            return StoredTable(self.bases[0], self.rows, self.schema, ())
        runs = np.concatenate(self.pieces) if self.pieces else np.zeros((0, 3), np.int64)
        provisional = runs[:, 0] < 0
        runs[provisional, 0] = [self.resolved[int(k)] for k in runs[provisional, 0]]
        used = list(dict.fromkeys(int(k) for k in runs[:, 0]))
        number = np.zeros(len(self.entries), np.int64)
        number[used] = np.arange(len(used))
        runs[:, 0] = number[runs[:, 0]]
        runs = merge_runs(runs)
        chunks = [self.entries[k] for k in used]
        whole = len(runs) == len(chunks) and all(
            (c, start, count) == (i, 0, chunks[i]["rows"])
            for i, (c, start, count) in enumerate(runs.tolist())
        )
        manifest = {
            "format": FORMAT,
            "rows": self.rows,
            "schema": self.encoded,
            "columns": [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "chunks": chunks,
            "runs": None if whole else self._put(encode_runs(runs)),
            "bases": self.bases,
        }
        digest = self._put(orjson.dumps(manifest))
        return StoredTable(digest, self.rows, self.schema, tuple(dict.fromkeys(self.new)))

    def _put(self, data: bytes) -> str:
        """Store ``data`` (Parquet and zstd frames are compressed already) as this version's:
        its event will refer to it even when an identical object was there (perhaps left by a
        write that recorded nothing, which no event would otherwise keep from gc)."""
        digest = self.objects.put(data, compress=False)
        self.new.append(digest)
        return digest


def merge_runs(runs: np.ndarray) -> np.ndarray:
    """``runs`` with each run that continues the one before joined to it."""
    if len(runs) < 2:
        return runs
    joins = (runs[1:, 0] == runs[:-1, 0]) & (runs[1:, 1] == runs[:-1, 1] + runs[:-1, 2])
    group = np.concatenate([[0], np.cumsum(~joins)])
    firsts = np.flatnonzero(np.concatenate([[True], ~joins]))
    merged = runs[firsts].copy()
    merged[:, 2] = np.bincount(group, weights=runs[:, 2]).astype(np.int64)
    return merged


def stats(table: pa.Table) -> dict[str, list[Any]]:
    """Per column (not ``_row_id``; the first ``STAT_COLUMNS``): [min, max, nulls], min and max
    None where unknown."""
    out: dict[str, list[Any]] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.name == ROW_ID or len(out) == STAT_COLUMNS:
            continue
        nulls = column.null_count
        low: Any = None
        high: Any = None
        kind = field.type
        ordered = (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_string(kind) or pa.types.is_large_string(kind)
        )  # fmt: skip
        if ordered and nulls < len(column):
            nan = pa.types.is_floating(kind) and pc.any(pc.is_nan(column)).as_py()
            if not nan:
                bounds = pc.min_max(column).as_py()
                low, high = bounds["min"], bounds["max"]
            if isinstance(low, float) and not (np.isfinite(low) and np.isfinite(high)):
                low = high = None
            if isinstance(low, str):
                low = low[:STAT_TEXT]
                high = high if len(high) <= STAT_TEXT else None
        out[field.name] = [low, high, nulls]
    return out
