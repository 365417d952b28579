"""Files read a batch at a time give the table read whole: types decided by values far into the
file, columns and object keys that appear late, CSV records longer than the first block."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, read_table
from fmforge.data.csvfile import FIRST_BLOCK
from fmforge.data.sources import Source
from fmforge.errors import InvalidDataSource
from fmforge.repository import Repository


def whole_and_batched(path: Path, batch_rows: int = 7) -> tuple[pa.Table, pa.Table]:
    whole = Source(path, batch_rows=10**9)
    batched = Source(path, batch_rows=batch_rows)
    parts = list(batched.batches())
    assert all(part.num_rows <= batch_rows for part in parts)
    table = pa.Table.from_batches(parts, batched.schema)
    return pa.Table.from_batches(list(whole.batches()), whole.schema), table


def lines(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_types_settle_across_batches(tmp_path: Path) -> None:
    records: list[object] = [{} for _ in range(10)]  # nothing but row counts at first
    records += [{"n": i, "tags": [], "m": {"a": i}} for i in range(30)]
    records += [{"n": 0.5, "tags": [1], "m": {"b": "x"}, "late": True}]  # float, new key, column
    whole, batched = whole_and_batched(lines(tmp_path / "a.jsonl", records))
    assert batched.equals(whole)
    assert batched.schema.field("n").type == pa.float64()
    assert batched.schema.field("tags").type == pa.list_(pa.int64())
    assert batched.schema.field("m").type == pa.struct([("a", pa.int64()), ("b", pa.string())])
    assert batched.column("late").to_pylist() == [None] * 40 + [True]
    assert batched.num_rows == 41


def test_jsonl_refusals_name_the_line_far_into_the_file(tmp_path: Path) -> None:
    records: list[object] = [{"n": i} for i in range(50)]
    path = lines(tmp_path / "a.jsonl", [*records, {"n": "x"}])
    with pytest.raises(InvalidDataSource, match=r"line 51, column 'n': a string where line 1"):
        Source(path, batch_rows=7)
    empty = lines(tmp_path / "b.jsonl", [{"m": {}} for _ in range(20)])
    with pytest.raises(InvalidDataSource, match="column 'm' holds objects without keys"):
        Source(empty, batch_rows=7)
    later = lines(tmp_path / "c.jsonl", [*({"m": {}} for _ in range(20)), {"m": {"k": 1}}])
    assert Source(later, batch_rows=7).schema.field("m").type == pa.struct([("k", pa.int64())])


def test_csv_typing_is_decided_by_every_block(tmp_path: Path) -> None:
    rows = [f"{i},{i * 0.25},{'true' if i % 2 else 'false'},{i}" for i in range(200_000)]
    rows[-1] = "199999,1.5,maybe,0199999"  # the last row makes two columns text
    path = tmp_path / "a.csv"
    path.write_text("n,x,flag,code\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 3 * FIRST_BLOCK  # several blocks
    whole, batched = whole_and_batched(path, batch_rows=50_000)
    assert batched.equals(whole)
    assert [f.type for f in batched.schema] == [pa.int64(), pa.float64(), pa.string(), pa.string()]


def test_a_record_longer_than_the_first_block_is_read_again_whole(tmp_path: Path) -> None:
    long = "x" * (FIRST_BLOCK + 1000)
    rows = [f"{i},short {i}" for i in range(30_000)]
    rows[20_000] = f'20000,"{long}"'
    path = tmp_path / "a.csv"
    path.write_text("n,text\n" + "\n".join(rows) + "\n")
    whole, batched = whole_and_batched(path, batch_rows=4096)
    assert batched.equals(whole)
    assert batched.num_rows == 30_000
    assert batched.column("text")[20_000].as_py() == long
    assert batched.column("text")[29_999].as_py() == "short 29999"


def test_parquet_row_groups_are_read_one_at_a_time(tmp_path: Path) -> None:
    table = pa.table({"n": list(range(1000)), "t": [f"t{i}" for i in range(1000)]})
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=100)
    whole, batched = whole_and_batched(path, batch_rows=64)
    assert batched.equals(whole)
    assert batched.equals(table)
    bad = table.set_column(1, "t", pa.array([f"t{i}" if i != 777 else "a\0b" for i in range(1000)]))
    pq.write_table(bad, tmp_path / "b.parquet", row_group_size=100)
    with pytest.raises(InvalidDataSource, match=r"row 778, column 't': a NUL character"):
        Source(tmp_path / "b.parquet", batch_rows=64)


def test_a_folder_of_mixed_files_keeps_its_order_and_types(
    repo: Repository, tmp_path: Path
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    lines(folder / "1.jsonl", [{"n": i, "t": f"j{i}"} for i in range(20)])
    (folder / "2.csv").write_text("t,n\n" + "".join(f"c{i},{i}\n" for i in range(20)))
    pq.write_table(pa.table({"n": [0.5, 1.5], "t": ["p0", "p1"]}), folder / "3.parquet")
    whole, batched = whole_and_batched(folder, batch_rows=3)
    assert batched.equals(whole)
    assert batched.schema.field("n").type == pa.float64()  # integers widened: exact
    assert batched.column("t").to_pylist()[:2] == ["c0", "c1"]  # CSV rows first, as always
    result = add_dataset(repo, "f", folder)
    assert read_table(repo, result.version.ref).equals(whole.select(["n", "t"]))
