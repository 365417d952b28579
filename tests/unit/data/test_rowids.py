"""Row ids counted batch by batch are the ids the whole-table implementation gave."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import blake3
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fmforge.data.rowids import DigestIndex, DigestSet, RowIds, hex_ids, id_digests, row_ids

_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def reference_row_ids(table: pa.Table) -> list[str]:
    """The implementation before ids were counted in batches (every record kept as a key)."""

    def values(column: pa.ChunkedArray) -> list[Any]:
        if pa.types.is_temporal(column.type):
            return list(pc.cast(column, pa.string()).to_pylist())
        return list(column.to_pylist())

    def as_hex(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return value.hex()
        raise TypeError

    names = table.column_names
    seen: dict[bytes, int] = {}
    ids = []
    for row in zip(*(values(table.column(n)) for n in names), strict=True):
        record = orjson.dumps(dict(zip(names, row, strict=True)), option=_CANONICAL, default=as_hex)
        repeat = seen.get(record, 0)
        seen[record] = repeat + 1
        if repeat:
            record += b"#%d" % repeat
        ids.append(blake3.blake3(record).hexdigest(length=16))
    return ids


def varied(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.1 else value

    pool = [rng.randrange(6) for _ in range(rows)]  # few distinct values: many repeats
    return pa.table(
        {
            "n": pa.array([maybe(p) for p in pool], pa.int64()),
            "x": pa.array([maybe(p / 3) for p in pool], pa.float64()),
            "t": pa.array([maybe(["é", "a b", "", "日本"][p % 4]) for p in pool], pa.string()),
            "big": pa.array([maybe("x" * (p * 50)) for p in pool], pa.large_string()),
            "ok": pa.array([maybe(p % 2 == 0) for p in pool], pa.bool_()),
            "when": pa.array([maybe(base + dt.timedelta(hours=p)) for p in pool],
                             pa.timestamp("us", tz="UTC")),
            "day": pa.array([maybe(dt.date(2024, 1, 1 + p)) for p in pool], pa.date32()),
            "raw": pa.array([maybe(bytes([p, 0, 255])) for p in pool], pa.binary()),
            "tags": pa.array([maybe([f"t{p}"] * (p % 3)) for p in pool], pa.list_(pa.string())),
            "meta": pa.array([maybe({"k": p, "s": None if p % 2 else "v"}) for p in pool],
                             pa.struct([("k", pa.int64()), ("s", pa.string())])),
        }
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_ids_are_the_reference_ids_whatever_the_batches(seed: int) -> None:
    table = varied(3000, seed)
    expected = reference_row_ids(table)
    assert row_ids(table) == expected
    assert len(set(expected)) == len(expected)  # repeats got #n
    counter = RowIds()
    rng = random.Random(seed)
    got: list[str] = []
    start = 0
    while start < table.num_rows:  # batches of random sizes, 1 to 700 rows
        size = rng.randint(1, 700)
        got += counter.ids(table.slice(start, size)).to_pylist()
        start += size
    assert got == expected


def test_column_order_does_not_change_an_id() -> None:
    table = varied(200, 9)
    shuffled = table.select(list(reversed(table.column_names)))
    assert row_ids(shuffled) == row_ids(table) == reference_row_ids(shuffled)


def test_one_distinct_record_many_times() -> None:
    table = pa.table({"a": [1] * 5000})
    assert row_ids(table) == reference_row_ids(table)


def test_digests_and_hex_round_trip() -> None:
    ids = pa.array([bytes(range(i, i + 16)).hex() for i in range(0, 200, 7)], pa.string())
    digests = id_digests(ids)
    assert digests.shape == (len(ids), 16)
    assert hex_ids(digests).to_pylist() == ids.to_pylist()
    assert id_digests(pa.chunked_array([ids.slice(0, 3), ids.slice(3)])).tolist() == (
        digests.tolist()
    )


def test_digest_index_and_set() -> None:
    rng = np.random.default_rng(0)
    digests = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
    digests[100, :8] = digests[200, :8]  # the same high half: found by its low half
    index = DigestIndex(digests, np.arange(5000) * 3)
    assert index.lookup(digests).tolist() == (np.arange(5000) * 3).tolist()
    others = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    assert (index.lookup(others) == -1).all()
    twice = DigestIndex(np.concatenate([digests[:10], digests[:10]]), np.arange(20))
    assert twice.lookup(digests[:10]).tolist() == list(range(10))  # the first one given wins
    seen = DigestSet()
    for start in range(0, 5000, 333):
        assert not seen.contains(digests[start : start + 333]).any()
        seen.add(digests[start : start + 333])
        assert seen.contains(digests[: start + 333]).all()
    for bucket in seen.buckets:  # levels merge as they double
        assert len(bucket) <= 2 + int(np.log2(5000 / 333))
