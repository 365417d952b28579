"""Filters that skip chunks by their statistics give exactly the rows a full scan gives.

Seeded random filters over a dataset of several chunks whose columns rise with the row
number (so whole chunks fall outside a condition), with nulls, NaN, infinities, text past the
statistics' 64 characters and integers beyond 2^53; each is run through ``where`` (chunks
skipped) and through ``select`` on the whole table (nothing skipped).
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, read_table, where
from fmforge.data.filters import check_filter, select
from fmforge.data.pushdown import ChunkFilter
from fmforge.data.storage import load_manifest, manifest_schema
from fmforge.data.versions import resolve
from fmforge.errors import InvalidFilter
from fmforge.repository import Repository

ROWS = 12_000


def table() -> pa.Table:
    rng = random.Random(5)

    def maybe(value: object, p: float = 0.05) -> object:
        return None if rng.random() < p else value

    n = [maybe(i) for i in range(ROWS)]
    x = [maybe(i / 7 - 300) for i in range(ROWS)]
    x[9000] = float("nan")
    x[200] = float("inf")
    x[201] = float("-inf")
    s = [maybe(f"k{i:06d}" + ("y" * 70 if i % 1000 == 0 else "")) for i in range(ROWS)]
    big = [maybe((1 << 60) + i) for i in range(ROWS)]
    flag = [maybe(i >= 6000) for i in range(ROWS)]
    return pa.table(
        {
            "n": pa.array(n, pa.int64()),
            "x": pa.array(x, pa.float64()),
            "s": pa.array(s, pa.string()),
            "big": pa.array(big, pa.int64()),
            "flag": pa.array(flag, pa.bool_()),
            "all_null": pa.nulls(ROWS, pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    root = tmp_path_factory.mktemp("pushdown")
    pq.write_table(table(), root / "t.parquet")
    (root / "repo").mkdir()
    with Repository.init(root / "repo") as repo:
        add_dataset(repo, "t", root / "t.parquet")
        full = read_table(repo, "t", with_ids=True)
    return root / "repo", full


CONSTANTS = {
    "int": ["0", "-1", "5999", "6000", "11999", "12000", "4242", "-300", "NULL", "'42'"],
    "float": ["0.5", "-300.0", "1e3", "2.5e2", "-1e308", "1e308", "42", "NULL", "571.4285714"],
    "text": ["'k004242'", "'k'", "'k006000'", "'zzz'", "''", "'k000000'", "NULL",
             "'k001000" + "y" * 70 + "'", "'k001000" + "y" * 80 + "'"],
    "big": ["1152921504606846976", "1152921504606850000", "1.152921504606847e18", "0", "NULL"],
}  # fmt: skip
COLUMNS = {"n": "int", "x": "float", "s": "text", "big": "big", "all_null": "int"}
OPS = ["=", "!=", "<>", "<", "<=", ">", ">="]


def random_filter(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(10 if depth < 3 else 6)
    column = rng.choice(list(COLUMNS))
    pool = CONSTANTS[COLUMNS[column]] + (CONSTANTS["float"][:3] if column != "s" else [])
    if kind <= 2:
        constant = rng.choice(pool)
        if rng.random() < 0.3:
            return f"{constant} {rng.choice(OPS)} {column}"
        return f"{column} {rng.choice(OPS)} {constant}"
    if kind == 3:
        low, high = sorted(rng.sample(pool[:6], 2))
        return f"{column} {'NOT ' if rng.random() < 0.2 else ''}BETWEEN {low} AND {high}"
    if kind == 4:
        items = ", ".join(rng.sample(pool, 3))
        return f"{column} {'NOT ' if rng.random() < 0.2 else ''}IN ({items})"
    if kind == 5:
        return rng.choice(
            [f"{column} IS NULL", f"{column} IS NOT NULL", "flag", "NOT flag", "n + 1 > 6000",
             "length(s) > 10", "CAST(n AS VARCHAR) = '4242'", "isnan(x)", "flag = true",
             "s LIKE 'k0042%'", "TRUE", "NULL"]
        )  # fmt: skip
    left, right = random_filter(rng, depth + 1), random_filter(rng, depth + 1)
    if kind == 6:
        return f"({left}) AND ({right})"
    if kind == 7:
        return f"({left}) OR ({right})"
    if kind == 8:
        return f"NOT ({left})"
    return f"({left}) AND NOT ({right})"


def test_skipping_chunks_never_changes_the_rows(stored: tuple[Path, pa.Table]) -> None:
    root, full = stored
    rng = random.Random(11)
    skipped = tried = 0
    with Repository.open(root) as repo:
        manifest = load_manifest(repo.objects, resolve(repo, "t").manifest)
        chunks = manifest["chunks"]
        assert len(chunks) >= 3
        schema = manifest_schema(manifest)
        for _ in range(250):
            condition = random_filter(rng)
            try:
                expected = select(full, condition)
            except InvalidFilter:  # e.g. comparing text with a number DuckDB cannot cast
                continue
            got = where(repo, "t", condition)
            assert same(got, expected), condition
            tried += 1
            tree = _tree(condition, full.column_names)
            chunk_filter = ChunkFilter(tree, schema)
            skipped += sum(not chunk_filter.may_match(c["stats"], c["rows"]) for c in chunks)
    assert tried > 180
    assert skipped > 100  # the statistics did rule chunks out


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN."""
    return a.schema.equals(b.schema) and [repr(r) for r in a.to_pylist()] == [
        repr(r) for r in b.to_pylist()
    ]


def _tree(condition: str, columns: list[str]) -> dict[str, object]:
    from fmforge.data.filters import select_stored

    found: dict[str, object] = {}

    def keep(tree: dict[str, object]) -> pa.Table:
        found.update(tree)
        return pa.table({c: pa.nulls(0) for c in columns})

    select_stored(condition, columns, keep)
    return found


@pytest.mark.parametrize(
    ("condition", "skips"),
    [
        ("n = 4242", True),
        ("n < 0", True),
        ("n > 11999", True),
        ("s = 'zzz'", True),
        ("s > 'k011999'", True),
        ("all_null = 3", True),
        ("all_null IS NOT NULL", True),
        ("x > 1e300", True),  # +inf: its chunk has no float statistics, so it is read
        ("x = 571.4285714285714", True),  # 6100 / 7 - 300: its chunk kept (a float margin)
        ("n = '4242'", False),  # text against an integer column: left to DuckDB
        ("length(s) = 7", False),
    ],
)
def test_which_filters_skip_chunks(
    stored: tuple[Path, pa.Table], condition: str, skips: bool
) -> None:
    root, full = stored
    check_filter(condition, full.column_names)
    with Repository.open(root) as repo:
        manifest = load_manifest(repo.objects, resolve(repo, "t").manifest)
        chunk_filter = ChunkFilter(_tree(condition, full.column_names), manifest_schema(manifest))
        kept = [chunk_filter.may_match(c["stats"], c["rows"]) for c in manifest["chunks"]]
        assert (not all(kept)) is skips
        got = where(repo, "t", condition)
        assert same(got, select(full, condition))
