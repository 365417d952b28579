"""Row ids: the blake3 of each record, counted batch by batch in bounded memory.

A row's id is the hex blake3 (128 bits) of its record: column names and values as canonical
JSON (keys sorted; times and dates as Arrow's text; bytes as hex). The n-th repeat of a record
within one table gets ``#n`` appended to the record before hashing, so ids are unique within a
table and the same record gets the same id in every version and every dataset.

``RowIds`` gives the ids of a table fed to it in batches. To know whether a record was seen
before it keeps the 16-byte digest of each distinct record, in sorted numpy levels (16 bytes a
row, looked up a batch at a time), and a count only for records seen twice or more: memory is
the batch plus 16 bytes per distinct row, whatever the table's size.
"""

from __future__ import annotations

from typing import Any

import blake3
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

ID_BYTES = 16
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_UNHEX = np.zeros(256, np.uint8)
_UNHEX[_HEX] = np.arange(16, dtype=np.uint8)


def row_ids(table: pa.Table) -> list[str]:
    """The id of each row of ``table``: hex blake3 (128 bits) of the canonical record."""
    counter = RowIds()
    return [] if table.num_rows == 0 else counter.ids(table).to_pylist()


def canonical_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Python values of a column, the same whatever else is installed: times and dates as
    Arrow's own text (to_pylist would give pandas Timestamps when pandas is importable)."""
    if pa.types.is_temporal(column.type):
        return list(pc.cast(column, pa.string()).to_pylist())
    return list(column.to_pylist())


def _bytes_as_hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"a {type(value).__name__} value cannot be hashed as a record")


def hex_ids(digests: np.ndarray) -> pa.StringArray:
    """Hex text (32 characters) of each row of an (n, 16) uint8 array, as an Arrow array."""
    count = len(digests)
    text = np.empty((count, 2 * ID_BYTES), np.uint8)
    text[:, 0::2] = _HEX[digests >> 4]
    text[:, 1::2] = _HEX[digests & 15]
    offsets = np.arange(0, (count + 1) * 2 * ID_BYTES, 2 * ID_BYTES, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(text))


def id_digests(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The (n, 16) uint8 digests of hex row ids (each exactly 32 lowercase hex characters)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    ids = ids.cast(pa.string())
    if len(ids) == 0:
        return np.zeros((0, ID_BYTES), np.uint8)
    if ids.offset or ids.null_count:
        ids = pa.array(ids.to_pylist(), pa.string())
    offsets = np.frombuffer(ids.buffers()[1], np.int32, len(ids) + 1)
    if not np.all(np.diff(offsets) == 2 * ID_BYTES):
        raise ValueError("row ids must be 32 hex characters each")
    data = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _UNHEX[data.reshape(-1, 2 * ID_BYTES)]
    return np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])


def split(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 16-byte digest as two big-endian uint64 (high, low): sortable as numbers."""
    whole = np.ascontiguousarray(digests).view(">u8").reshape(-1, 2)
    return whole[:, 0].astype(np.uint64), whole[:, 1].astype(np.uint64)


class DigestIndex:
    """16-byte digests, sorted, each with an int64 payload (default: none; a lookup then gives
    a position in the sorted order); looked up in batches. A digest given twice keeps its
    first payload."""

    def __init__(self, digests: np.ndarray, payload: np.ndarray | None = None) -> None:
        whole = np.ascontiguousarray(digests).view(">u8").reshape(-1, 2)
        order = np.lexsort((whole[:, 1], whole[:, 0]))  # stable: equal digests keep their order
        self.high = whole[order, 0].astype(np.uint64)
        self.low = whole[order, 1].astype(np.uint64)
        self.payload = None if payload is None else np.asarray(payload, np.int64)[order]
        del order
        first = np.ones(len(self.high), bool)
        first[1:] = (self.high[1:] != self.high[:-1]) | (self.low[1:] != self.low[:-1])
        if not first.all():
            self.high, self.low = self.high[first], self.low[first]
            self.payload = None if self.payload is None else self.payload[first]

    def __len__(self) -> int:
        return len(self.high)

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """The payload of each digest, or -1 where it is not in the index."""
        found = np.full(len(digests), -1, np.int64)
        if len(self.high) == 0 or len(digests) == 0:
            return found
        high, low = split(digests)
        left = np.searchsorted(self.high, high, "left")
        right = np.searchsorted(self.high, high, "right")
        single = right - left == 1
        at = np.minimum(left, len(self.high) - 1)
        hit = single & (self.low[at] == low)
        found[hit] = at[hit]
        for i in np.flatnonzero(right - left > 1):  # equal high halves: vanishingly rare
            match = np.flatnonzero(self.low[left[i] : right[i]] == low[i])
            if len(match):
                found[i] = left[i] + match[0]
        if self.payload is not None:
            found[found >= 0] = self.payload[found[found >= 0]]
        return found

    def digests(self) -> np.ndarray:
        """The digests, in sorted order, as an (n, 16) uint8 array."""
        whole = np.empty((len(self.high), 2), ">u8")
        whole[:, 0], whole[:, 1] = self.high, self.low
        return whole.view(np.uint8).reshape(-1, ID_BYTES)


class DigestMap:
    """``DigestIndex`` split by the digests' first 4 bits into 16, built one part at a time:
    what sorting takes for a moment is a sixteenth of the whole."""

    def __init__(self, digests: np.ndarray, payload: np.ndarray) -> None:
        which = digests[:, 0] >> 4
        self.parts = []
        for bucket in range(16):
            rows = np.flatnonzero(which == bucket)
            self.parts.append(DigestIndex(digests[rows], payload[rows]))

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """The payload of each digest, or -1 where it is not in the map."""
        found = np.full(len(digests), -1, np.int64)
        which = digests[:, 0] >> 4
        for bucket in np.unique(which):
            rows = np.flatnonzero(which == bucket)
            found[rows] = self.parts[bucket].lookup(digests[rows])
        return found


class DigestSet:
    """A growing set of 16-byte digests, 16 bytes each: split by their first 4 bits into 16
    buckets, each a list of sorted levels merged as they double (so a merge, and the memory
    it takes for a moment, is a sixteenth of the set at most)."""

    BUCKETS = 16

    def __init__(self) -> None:
        self.buckets: list[list[DigestIndex]] = [[] for _ in range(self.BUCKETS)]

    @property
    def levels(self) -> list[DigestIndex]:
        return [level for bucket in self.buckets for level in bucket]

    def contains(self, digests: np.ndarray) -> np.ndarray:
        hits = np.zeros(len(digests), bool)
        which = digests[:, 0] >> 4
        for bucket in np.unique(which):
            levels = self.buckets[bucket]
            if levels:
                rows = np.flatnonzero(which == bucket)
                part = digests[rows]
                found = np.zeros(len(rows), bool)
                for level in levels:
                    found |= level.lookup(part) >= 0
                hits[rows] = found
        return hits

    def add(self, digests: np.ndarray) -> None:
        """Add digests none of which is in the set yet."""
        which = digests[:, 0] >> 4
        for bucket in np.unique(which):
            levels = self.buckets[bucket]
            raw = np.ascontiguousarray(digests[which == bucket])
            while levels and len(levels[-1]) <= 2 * len(raw):
                raw = np.concatenate([levels.pop().digests(), raw])
            levels.append(DigestIndex(raw))


class RowIds:
    """The ids of one table's rows, fed in order a batch at a time."""

    def __init__(self) -> None:
        self.seen = DigestSet()
        self.repeats: dict[bytes, int] = {}  # digest -> the next repeat number, seen twice+

    def ids(self, batch: pa.RecordBatch | pa.Table) -> pa.StringArray:
        return hex_ids(self.digests(batch))

    def digests(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The (rows, 16) uint8 ids of ``batch``'s rows, continuing the table so far."""
        names = batch.column_names
        columns = [canonical_values(batch.column(n)) for n in names]

        def record(values: tuple[Any, ...]) -> bytes:
            return orjson.dumps(
                dict(zip(names, values, strict=True)), option=_CANONICAL, default=_bytes_as_hex
            )

        # One record at a time: orjson's bytes keep a few KB of buffer each, so a batch of
        # them would cost far more than the batch itself.
        packed = bytearray()
        for values in zip(*columns, strict=True):
            packed += blake3.blake3(record(values)).digest(length=ID_BYTES)
        out = np.frombuffer(packed, np.uint8).reshape(-1, ID_BYTES).copy()
        earlier = self.seen.contains(out)
        first: set[bytes] = set()
        fresh = np.ones(len(out), bool)
        for i in range(len(out)):
            digest = out[i].tobytes()
            if not earlier[i] and digest not in first:
                first.add(digest)
                continue
            fresh[i] = False
            repeat = self.repeats.get(digest, 1)
            self.repeats[digest] = repeat + 1
            again = record(tuple(column[i] for column in columns)) + b"#%d" % repeat
            out[i] = np.frombuffer(blake3.blake3(again).digest(length=ID_BYTES), np.uint8)
        self.seen.add(out[fresh])
        return out
