"""Hostile data files: `data add` and `data export` either give back exactly what was given or
refuse in one line naming the file (line and column where the format has them), with the
repository unchanged; and what is accepted comes back exactly (add -> export -> re-add records
nothing)."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, export_table, read_table, resolve
from fmforge.data.sources import read_source
from fmforge.errors import InvalidDataSource
from fmforge.repository import Repository
from tests.hostile.harness import api_refused, cli_refused, unchanged

BASE = [{"text": "hello", "label": 0}, {"text": "world", "label": 1}]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository holding one dataset, ``base``."""
    path = tmp_path / "repo"
    path.mkdir()
    source = tmp_path / "base.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in BASE))
    with Repository.init(path) as repo:
        add_dataset(repo, "base", source)
    return path


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _lines(*rows: str) -> bytes:
    return "".join(row + "\n" for row in rows).encode()


def _nested(depth: int) -> bytes:
    return ('{"x": ' + "[" * depth + "1" + "]" * depth + "}\n").encode()


def _many_good_then_bad() -> bytes:
    good = "".join(f"row {i},{i}\n" for i in range(2, 500))
    return b"text,n\n" + good.encode() + b"caf\xe9,500\n" + b"after,501\n"


def _far(last: bytes, rows: int = 80_000) -> bytes:
    """A CSV past the first 1 MiB block and a JSON Lines batch, then ``last``."""
    return b"text,n\n" + "".join(f"row {i},{i}\n" for i in range(rows)).encode() + last


def _far_jsonl(last: bytes, rows: int = 70_000) -> bytes:
    return "".join(f'{{"n": {i}}}\n' for i in range(rows)).encode() + last


def _late_parquet_nul() -> bytes:
    table = pa.table({"t": [f"t{i}" if i != 150_000 else "a\0b" for i in range(160_000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=10_000)
    return bytes(sink.getvalue().to_pybytes())


def _invalid_utf8_parquet() -> bytes:
    broken = pa.array([b"ok", b"\xff\xfe"], pa.binary()).cast(pa.string(), safe=False)
    return _parquet(pa.table({"text": broken}))


@dataclass(frozen=True)
class Bad:
    """A file (or folder) `data add` must refuse with ``contains`` in its one line."""

    name: str
    files: dict[str, bytes]  # relative path -> content; the first is what is added
    contains: str
    args: tuple[str, ...] = ()
    target: str | None = None  # what to add, relative, when not the first file
    extra: Callable[[Path], None] | None = field(default=None, compare=False)


BAD = [
    # CSV structure
    Bad(
        "csv_duplicate_header",
        {"d.csv": b"a,a\n1,2\n"},
        "line 1: the column name 'a' appears twice",
    ),
    Bad("csv_duplicate_empty_header", {"d.csv": b",b,\n1,2,3\n"}, "column name '' appears twice"),
    Bad("csv_reserved_row_id", {"d.csv": b"_row_id,a\n1,2\n"}, "'_row_id' is reserved"),
    Bad("csv_empty_file", {"d.csv": b""}, "an empty file"),
    Bad("csv_only_blank_lines", {"d.csv": b"\n\n\n"}, "an empty file (no header line)"),
    Bad(
        "csv_ragged_long",
        {"d.csv": b"text,label\nhello,0\nbroken,1,extra\n"},
        "line 3 has 3 fields",
    ),
    Bad("csv_ragged_short", {"d.csv": b"a,b,c\n1,2,3\n4,5\n"}, "line 3 has 2 fields"),
    Bad(
        "csv_ragged_after_quoted_newline",
        {"d.csv": b'a,b\n"two\nlines",1\n2,3,4\n'},
        "line 4 has 3 fields",
    ),
    Bad("csv_ragged_after_blank_lines", {"d.csv": b"a,b\n\n1,2\n\n3,4,5\n"}, "line 5 has 3 fields"),
    Bad("csv_unclosed_quote", {"d.csv": b'a,b\n"open,1\n2,3\n'}, "line 2 has 1 fields"),
    # encodings
    Bad(
        "csv_latin1",
        {"d.csv": "name,city\nJosé,München\n".encode("latin-1")},
        "line 2, column 'name' (character 4): byte 0xe9 is not valid UTF-8; pass --encoding",
    ),
    Bad("csv_cp1252_quotes", {"d.csv": b"a,b\n1,\x93quoted\x94\n"}, "line 2, column 'b'"),
    Bad("csv_invalid_utf8_line_500", {"d.csv": _many_good_then_bad()}, "line 500, column 'text'"),
    Bad("csv_invalid_utf8_in_header", {"d.csv": b"t\xe9xt,n\n1,2\n"}, "line 1, character 2"),
    Bad("csv_truncated_utf8_at_end", {"d.csv": b"a\n\xc3"}, "ends inside a UTF-8 character"),
    Bad("csv_overlong_utf8", {"d.csv": b"a\n\xc0\xaf\n"}, "line 2, column 'a'"),
    Bad("csv_utf8_surrogate_bytes", {"d.csv": b"a\n\xed\xa0\x80\n"}, "not valid UTF-8"),
    Bad("csv_utf16_without_bom", {"d.csv": "a,b\nx,y\n".encode("utf-16-le")}, "utf-16"),
    Bad(
        "csv_utf16_bom_lone_surrogate",
        {"d.csv": codecs.BOM_UTF16_LE + "a\n".encode("utf-16-le") + b"\x00\xd8b\x00"},
        "not valid UTF-16",
    ),
    Bad(
        "csv_utf32_bom_out_of_range",
        {"d.csv": codecs.BOM_UTF32_LE + "a\n".encode("utf-32-le") + b"\x00\x00\x11\x00"},
        "not valid UTF-32",
    ),
    Bad(
        "csv_latin1_said_utf8",
        {"d.csv": "a\nJosé\n".encode("latin-1")},
        "not valid UTF-8",
        args=("--encoding", "utf-8"),
    ),
    Bad(
        "csv_utf8_said_ascii",
        {"d.csv": "a\nJosé\n".encode()},
        "not valid ASCII",
        args=("--encoding", "ascii"),
    ),
    Bad(
        "unknown_encoding",
        {"d.csv": b"a\n1\n"},
        "unknown encoding 'klingon'",
        args=("--encoding", "klingon"),
    ),
    Bad(
        "binary_codec_as_encoding",
        {"d.csv": b"a\n1\n"},
        "not a text encoding",
        args=("--encoding", "base64"),
    ),
    Bad(
        "encoding_for_parquet",
        {"d.parquet": _parquet(pa.table({"a": [1]}))},
        "--encoding applies to CSV and JSON Lines",
        args=("--encoding", "latin-1"),
    ),
    # problems past the first block or batch of a big file (read a block at a time)
    Bad("csv_far_invalid_utf8", {"d.csv": _far(b"caf\xe9,1\n")}, "line 80002, column 'text'"),
    Bad("csv_far_ragged", {"d.csv": _far(b"a,1,2\n")}, "line 80002 has 3 fields"),
    Bad("csv_far_nul", {"d.csv": _far(b"x\x00,1\n")}, "line 80002, column 'text' (character 2)"),
    Bad(
        "jsonl_far_mixed_kinds",
        {"d.jsonl": _far_jsonl(b'{"n": "x"}\n')},
        "line 70001, column 'n': a string where line 1 has an integer",
    ),
    Bad("jsonl_far_malformed", {"d.jsonl": _far_jsonl(b'{"n": 1\n')}, "line 70001, character 8"),
    Bad("parquet_far_nul", {"d.parquet": _late_parquet_nul()}, "row 150001, column 't': a NUL"),
    # NUL
    Bad("csv_nul_byte", {"d.csv": b"a,b\nx\x00y,2\n"}, "line 2, column 'a' (character 2): a NUL"),
    Bad("jsonl_raw_nul_byte", {"d.jsonl": b'{"a": "x\x00"}\n'}, "line 1, character 9: a NUL"),
    Bad(
        "jsonl_escaped_nul",
        {"d.jsonl": _lines('{"text": "a\\u0000b"}')},
        "line 1, column 'text': a NUL character",
    ),
    Bad("jsonl_nul_in_key", {"d.jsonl": _lines('{"a\\u0000": 1}')}, "a column name with a NUL"),
    Bad(
        "parquet_nul",
        {"d.parquet": _parquet(pa.table({"t": ["ok", "a\x00b"]}))},
        "row 2, column 't': a NUL character",
    ),
    # JSON Lines values
    Bad(
        "jsonl_int_beyond_int64",
        {"d.jsonl": _lines('{"n": 123456789012345678901234567890}')},
        "line 1, column 'n': 123456789012345678901234567890 is outside the 64-bit integer range",
    ),
    Bad(
        "jsonl_int64_max_plus_one",
        {"d.jsonl": _lines('{"n": 9223372036854775808}')},
        "outside the 64-bit integer range",
    ),
    Bad(
        "jsonl_int64_min_minus_one",
        {"d.jsonl": _lines('{"n": -9223372036854775809}')},
        "outside the 64-bit integer range",
    ),
    Bad(
        "jsonl_huge_int_text",
        {"d.jsonl": _lines('{"n": ' + "9" * 5000 + "}")},
        "outside the 64-bit integer range",
    ),
    Bad(
        "jsonl_nested_big_int",
        {"d.jsonl": _lines('{"m": {"v": [1, 99999999999999999999]}}')},
        "column 'm.v[]'",
    ),
    Bad(
        "jsonl_float_too_many_digits",
        {"d.jsonl": _lines('{"x": 3.14159265358979323846264}')},
        "has more digits than a 64-bit float holds",
    ),
    Bad(
        "jsonl_float_overflow", {"d.jsonl": _lines('{"x": 1e400}')}, "out of a 64-bit float's range"
    ),
    Bad("jsonl_float_underflow", {"d.jsonl": _lines('{"x": 1e-400}')}, "rounds to zero"),
    Bad("jsonl_nan", {"d.jsonl": _lines('{"x": NaN}')}, "column 'x': NaN is not a JSON number"),
    Bad(
        "jsonl_infinity", {"d.jsonl": _lines('{"x": -Infinity}')}, "-Infinity is not a JSON number"
    ),
    Bad(
        "jsonl_wide_int_in_float_column",
        {"d.jsonl": _lines('{"x": 0.5}', '{"x": 9007199254740993}')},
        "the integer 9007199254740993 (line 2) cannot stay exact",
    ),
    Bad(
        "jsonl_duplicate_key",
        {"d.jsonl": _lines('{"a": 1, "a": 2}')},
        "line 1: the key 'a' appears twice",
    ),
    Bad(
        "jsonl_nested_duplicate_key",
        {"d.jsonl": _lines('{"a": {"b": 1, "b": 1}}')},
        "the key 'b' appears twice",
    ),
    Bad(
        "jsonl_mixed_kinds",
        {"d.jsonl": _lines('{"label": 0}', '{"label": "spam"}')},
        "line 2, column 'label': a string where line 1 has an integer",
    ),
    Bad(
        "jsonl_mixed_kinds_in_list",
        {"d.jsonl": _lines('{"x": [1, "a"]}')},
        "column 'x[]': a string where line 1 has an integer",
    ),
    Bad(
        "jsonl_mixed_kinds_in_object",
        {"d.jsonl": _lines('{"m": {"k": true}}', '{"m": {"k": [1]}}')},
        "line 2, column 'm.k': a list where line 1 has a boolean",
    ),
    Bad(
        "jsonl_list_then_object",
        {"d.jsonl": _lines('{"x": [1]}', '{"x": {"a": 1}}')},
        "an object where line 1 has a list",
    ),
    Bad("jsonl_deep_nesting", {"d.jsonl": _nested(40)}, "nested more than 32 levels deep"),
    Bad("jsonl_very_deep_nesting", {"d.jsonl": _nested(100_000)}, "line 1"),
    Bad("jsonl_not_an_object", {"d.jsonl": _lines("[1, 2]")}, "a record must be a JSON object"),
    Bad("jsonl_scalar_line", {"d.jsonl": _lines('"text"')}, "not a string"),
    Bad("jsonl_malformed", {"d.jsonl": _lines('{"a": 1}', '{"a": 2')}, "line 2, character 8"),
    Bad("jsonl_trailing_garbage", {"d.jsonl": _lines('{"a": 1} x')}, "malformed JSON"),
    Bad("jsonl_empty_file", {"d.jsonl": b""}, "no records"),
    Bad("jsonl_only_blank_lines", {"d.jsonl": b"\n  \n\n"}, "no records"),
    Bad("jsonl_only_empty_objects", {"d.jsonl": _lines("{}", "{}")}, "no columns"),
    Bad(
        "jsonl_empty_object_column",
        {"d.jsonl": _lines('{"a": 1, "m": {}}')},
        "column 'm' holds objects without keys",
    ),
    Bad(
        "jsonl_lone_surrogate",
        {"d.jsonl": _lines('{"t": "\\ud800"}')},
        "column 't': an unpaired surrogate \\ud800",
    ),
    Bad("jsonl_reserved_row_id", {"d.jsonl": _lines('{"_row_id": "x"}')}, "reserved for row ids"),
    Bad("jsonl_latin1", {"d.jsonl": b'{"a": "Jos\xe9"}\n'}, "line 1, character 11: byte 0xe9"),
    # Parquet
    Bad("parquet_not_parquet", {"d.parquet": b"a,b\n1,2\n"}, "not a readable Parquet file"),
    Bad(
        "parquet_truncated",
        {"d.parquet": _parquet(pa.table({"a": list(range(100))}))[:-20]},
        "not a readable Parquet file",
    ),
    Bad("parquet_empty_file", {"d.parquet": b""}, "not a readable Parquet file"),
    Bad(
        "parquet_decimal",
        {
            "d.parquet": _parquet(
                pa.table({"price": pa.array([Decimal("1.10")], pa.decimal128(5, 2))})
            )
        },
        "column 'price' is decimal128(5, 2), which fmforge cannot store exactly",
    ),
    Bad(
        "parquet_half_float",
        {"d.parquet": _parquet(pa.table({"h": pa.array([1.0], pa.float32()).cast(pa.float16())}))},
        "column 'h' is halffloat",
    ),
    Bad(
        "parquet_duration",
        {"d.parquet": _parquet(pa.table({"d": pa.array([5], pa.duration("s"))}))},
        "column 'd' is duration[s]",
    ),
    Bad(
        "parquet_reserved_row_id",
        {"d.parquet": _parquet(pa.table({"_row_id": ["x"]}))},
        "reserved for row ids",
    ),
    Bad(
        "parquet_duplicate_columns",
        {"d.parquet": _parquet(pa.Table.from_arrays([pa.array([1]), pa.array([2])], ["a", "a"]))},
        "the column name 'a' appears twice (columns 1 and 2)",
    ),
    Bad(
        "parquet_invalid_utf8",
        {"d.parquet": _invalid_utf8_parquet()},
        "column 'text' holds text that is not valid UTF-8",
    ),
    Bad("parquet_no_columns", {"d.parquet": _parquet(pa.table({}))}, "no columns"),
    # folders and paths
    Bad(
        "folder_mixed_columns",
        {"f/1.jsonl": _lines('{"text": "a"}'), "f/2.csv": b"body\nb\n"},
        "columns body: string differ from 1.jsonl's text: string",
        target="f",
    ),
    Bad(
        "folder_mixed_types",
        {"f/1.jsonl": _lines('{"n": 1}'), "f/2.jsonl": _lines('{"n": "x"}')},
        "column 'n' is string where 1.jsonl has int64",
        target="f",
    ),
    Bad(
        "folder_int_beyond_float",
        {"f/1.jsonl": _lines('{"n": 9007199254740993}'), "f/2.jsonl": _lines('{"n": 0.5}')},
        "holds the integer 9007199254740993, which cannot stay exact",
        target="f",
    ),
    Bad(
        "folder_one_bad_file",
        {"f/1.csv": b"a\n1\n", "f/2.csv": b"a\n\xff\n"},
        "2.csv: line 2, column 'a'",
        target="f",
    ),
    Bad(
        "folder_empty",
        {"f/readme.txt": b"nothing here"},
        "no .csv, .jsonl or .parquet files",
        target="f",
    ),
    Bad("unsupported_suffix", {"d.txt": b"text\nhello\n"}, "unsupported file type '.txt'"),
    Bad("missing_file", {"d.csv": b"a\n1\n"}, "no such file or directory", target="nope.csv"),
    Bad(
        "fifo",
        {"d.csv": b"a\n1\n"},
        "not a regular file",
        target="pipe.csv",
        extra=lambda here: os.mkfifo(here / "pipe.csv"),
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_add_refuses(root: Path, tmp_path: Path, case: Bad) -> None:
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if case.extra is not None:
        case.extra(tmp_path)
    target = tmp_path / (case.target or next(iter(case.files)))
    line = cli_refused(root, "data", "add", "d", str(target), *case.args, contains=case.contains)
    assert str(target) in line or case.args, line  # the file is named


def test_a_record_longer_than_the_csv_limit_is_refused(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_bytes(b"a,b\n1," + b"x" * (33 << 20) + b"\n")
    cli_refused(root, "data", "add", "d", str(path), contains="a record too long")


# -- export ---------------------------------------------------------------------------------


def _add_parquet(root: Path, tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "src.parquet"
    pq.write_table(table, path)
    with Repository.open(root) as repo:
        add_dataset(repo, "p", path)


@dataclass(frozen=True)
class BadExport:
    name: str
    table: pa.Table | None  # added as dataset ``p``; None: export ``base``
    output: str  # relative to tmp_path
    contains: str


BAD_EXPORTS = [
    BadExport(
        "binary_to_csv",
        pa.table({"b": pa.array([b"Jos\xe9"], pa.binary())}),
        "o.csv",
        "column 'b' holds bytes (binary), which CSV cannot hold exactly",
    ),
    BadExport(
        "binary_to_jsonl",
        pa.table({"b": pa.array([b"Jos\xe9"], pa.binary())}),
        "o.jsonl",
        "which JSON cannot hold exactly",
    ),
    BadExport(
        "nested_bytes_to_jsonl",
        pa.table({"s": pa.array([{"b": b"\xff"}], pa.struct([("b", pa.binary())]))}),
        "o.jsonl",
        "column 's' holds bytes",
    ),
    BadExport("list_to_csv", pa.table({"l": [[1, 2]]}), "o.csv", "CSV holds flat values only"),
    BadExport("struct_to_csv", pa.table({"s": [{"a": 1}]}), "o.csv", "CSV holds flat values only"),
    BadExport(
        "nan_to_jsonl",
        pa.table({"x": [1.0, float("nan")]}),
        "o.jsonl",
        "row 2, column 'x': nan has no JSON form",
    ),
    BadExport("infinity_to_jsonl", pa.table({"x": [float("-inf")]}), "o.jsonl", "-inf has no JSON"),
    BadExport("to_a_directory", None, "adir", "is a directory"),
    BadExport("into_a_missing_directory", None, "missing/o.csv", "no such directory"),
    BadExport("unsupported_suffix", None, "o.xlsx", "export to .csv, .jsonl or .parquet"),
    BadExport("no_suffix", None, "o", "export to .csv, .jsonl or .parquet"),
]


@pytest.mark.parametrize("case", BAD_EXPORTS, ids=[case.name for case in BAD_EXPORTS])
def test_export_refuses_and_leaves_nothing(root: Path, tmp_path: Path, case: BadExport) -> None:
    if case.table is not None:
        _add_parquet(root, tmp_path, case.table)
    (tmp_path / "adir").mkdir()
    before = _outside(root, tmp_path)
    cli_refused(root, "data", "export", "p" if case.table is not None else "base", "-o",
                str(tmp_path / case.output), contains=case.contains)  # fmt: skip
    assert _outside(root, tmp_path) == before  # no file, no temporary file


def _outside(root: Path, folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if not p.is_relative_to(root))


def test_export_over_a_non_regular_file_is_refused(root: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.csv")
    cli_refused(root, "data", "export", "base", "-o", str(tmp_path / "pipe.csv"),
                contains="exists and is not a regular file")  # fmt: skip


def test_export_where_nothing_may_be_written_is_refused(root: Path) -> None:
    cli_refused(root, "data", "export", "base", "-o", "/proc/fmforge-export.csv",
                contains="cannot write in '/proc'")  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_export_into_a_read_only_directory_is_refused(root: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        cli_refused(root, "data", "export", "base", "-o", str(locked / "o.csv"),
                    contains="cannot write in")  # fmt: skip
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_failed_export_keeps_the_previous_file(root: Path, tmp_path: Path) -> None:
    _add_parquet(root, tmp_path, pa.table({"l": [[1, 2]]}))
    target = tmp_path / "o.csv"
    target.write_text("previous contents\n")
    cli_refused(root, "data", "export", "p", "-o", str(target), contains="flat values only")
    assert target.read_text() == "previous contents\n"


def test_export_keeps_the_mode_of_the_file_it_replaces(repo: Repository, tmp_path: Path) -> None:
    target = tmp_path / "o.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    export_table(pa.table({"a": [1]}), target)
    assert target.read_text() == '"a"\n1\n'
    assert target.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh.csv"
    export_table(pa.table({"a": [1]}), fresh)
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_api_refuses_the_same_way(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,a\n1,2\n")
    with Repository.open(root) as repo:
        api_refused(root, lambda: add_dataset(repo, "d", path), InvalidDataSource, "appears twice")


# -- what is accepted comes back exactly -----------------------------------------------------


@dataclass(frozen=True)
class Good:
    name: str
    filename: str
    content: bytes
    rows: list[dict[str, Any]]  # what the version must hold, exactly
    types: list[str] | None = None
    encoding: str | None = None


LATIN1 = "name,city\nJosé,München\n"
CSV_TEXT = (
    "zip,date,na,quoted,price,big,flag,neg\n"
    '01234,2013-11-07T06:20:48,NA,"a, ""b""\nc",1.10,123456789012345678901234567890,true,-0\n'
    ',2015-05-28,,"",2.5,7,false,1\n'
)
GOOD = [
    Good(
        "csv_text_stays_text",
        "d.csv",
        CSV_TEXT.encode(),
        [
            {
                "zip": "01234",
                "date": "2013-11-07T06:20:48",
                "na": "NA",
                "quoted": 'a, "b"\nc',
                "price": 1.1,
                "big": "123456789012345678901234567890",
                "flag": True,
                "neg": -0.0,
            },
            {
                "zip": None,
                "date": "2015-05-28",
                "na": None,
                "quoted": "",
                "price": 2.5,
                "big": "7",
                "flag": False,
                "neg": 1.0,
            },
        ],
        ["string", "string", "string", "string", "double", "string", "bool", "double"],
    ),
    Good(
        "csv_integers",
        "d.csv",
        b"n,m\n1,-9223372036854775808\n,9223372036854775807\n",
        [{"n": 1, "m": -(2**63)}, {"n": None, "m": 2**63 - 1}],
        ["int64", "int64"],
    ),
    Good("csv_plus_and_spaces_stay_text", "d.csv", b"a,b\n+1, 2\n", [{"a": "+1", "b": " 2"}]),
    Good(
        "csv_float_digits_kept_as_text",
        "d.csv",
        b"x\n0.1\n3.14159265358979323846\n",
        [{"x": "0.1"}, {"x": "3.14159265358979323846"}],
        ["string"],
    ),
    Good(
        "csv_seventeen_digits_are_floats",
        "d.csv",
        b"x\n0.10000000000000001\n1e-5\n",
        [{"x": 0.1}, {"x": 1e-5}],
        ["double"],
    ),
    Good("csv_header_only", "d.csv", b"a,b\n", [], ["string", "string"]),
    Good("csv_crlf", "d.csv", b"a,b\r\n1,x\r\n2,y\r\n", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    Good("csv_no_final_newline", "d.csv", b"a\nx", [{"a": "x"}]),
    Good("csv_utf8_bom", "d.csv", codecs.BOM_UTF8 + "a,b\né,1\n".encode(), [{"a": "é", "b": 1}]),
    Good("csv_utf16le_bom", "d.csv", "a,b\né,1\n".encode("utf-16"), [{"a": "é", "b": 1}]),
    Good(
        "csv_utf16be_bom",
        "d.csv",
        codecs.BOM_UTF16_BE + "a,b\né,1\n".encode("utf-16-be"),
        [{"a": "é", "b": 1}],
    ),
    Good(
        "csv_utf32le_bom",
        "d.csv",
        codecs.BOM_UTF32_LE + "a\n😀\n".encode("utf-32-le"),
        [{"a": "😀"}],
    ),
    Good(
        "csv_utf32be_bom",
        "d.csv",
        codecs.BOM_UTF32_BE + "a\n😀\n".encode("utf-32-be"),
        [{"a": "😀"}],
    ),
    Good(
        "csv_latin1_with_encoding",
        "d.csv",
        LATIN1.encode("latin-1"),
        [{"name": "José", "city": "München"}],
        encoding="latin-1",
    ),
    Good(
        "csv_very_long_line",
        "d.csv",
        b"a,b\n" + b"y" * (3 << 20) + b",1\n",
        [{"a": "y" * (3 << 20), "b": 1}],
    ),
    Good(
        "jsonl_exact_values",
        "d.jsonl",
        _lines(
            '{"i": 9223372036854775807, "f": 0.30000000000000004, "s": "é\\n\\"", "n": null}',
            '{"i": -9223372036854775808, "f": 1e-300, "s": "😀", "extra": [1, 2]}',
        ),
        [
            {"i": 2**63 - 1, "f": 0.30000000000000004, "s": 'é\n"', "n": None, "extra": None},
            {"i": -(2**63), "f": 1e-300, "s": "😀", "n": None, "extra": [1, 2]},
        ],
    ),
    Good(
        "jsonl_keys_missing_from_the_first_record_are_kept",
        "d.jsonl",
        _lines('{"a": 1}', '{"b": "x"}'),
        [{"a": 1, "b": None}, {"a": None, "b": "x"}],
    ),
    Good(
        "jsonl_ints_and_fractions",
        "d.jsonl",
        _lines('{"x": 1}', '{"x": 0.5}'),
        [{"x": 1.0}, {"x": 0.5}],
        ["double"],
    ),
    Good(
        "jsonl_nested",
        "d.jsonl",
        _lines('{"m": {"tags": ["a"], "n": 1}}', '{"m": null}'),
        [{"m": {"tags": ["a"], "n": 1}}, {"m": None}],
    ),
    Good(
        "jsonl_nesting_at_the_limit", "d.jsonl", _nested(31), [{"x": json.loads(_nested(31))["x"]}]
    ),
    Good("jsonl_utf16_bom", "d.jsonl", '{"a": "é"}\n'.encode("utf-16"), [{"a": "é"}]),
]


@pytest.mark.parametrize("case", GOOD, ids=[case.name for case in GOOD])
def test_accepted_files_come_back_exactly(repo: Repository, tmp_path: Path, case: Good) -> None:
    path = tmp_path / case.filename
    path.write_bytes(case.content)
    added = add_dataset(repo, "d", path, encoding=case.encoding)
    assert read_table(repo, "d").to_pylist() == case.rows
    if case.types is not None:
        assert [c["type"] for c in added.version.columns] == case.types
    recorded = added.version.transformation["sources"][0]
    assert "encoding" in recorded
    suffix = path.suffix
    for fmt in dict.fromkeys((suffix, ".jsonl", ".parquet")):
        if fmt == ".jsonl" and not case.rows:
            continue  # an empty JSON Lines file has no columns to add
        out = tmp_path / f"out{fmt}"
        export_table(read_table(repo, "d"), out)
        with unchanged(repo.root):  # re-adding the export records nothing
            again = add_dataset(repo, "d", out)
        assert not again.created, fmt
        assert again.version.id == added.version.id


def test_csv_export_keeps_float_columns_floats(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_bytes(_lines('{"x": 1.0, "y": 2}', '{"x": -0.0, "y": null}'))
    add_dataset(repo, "d", tmp_path / "d.jsonl")
    export_table(read_table(repo, "d"), tmp_path / "o.csv")
    assert read_source(tmp_path / "o.csv").to_pylist() == [
        {"x": 1.0, "y": 2},
        {"x": -0.0, "y": None},
    ]
    assert read_source(tmp_path / "o.csv").schema.field("x").type == pa.float64()


def test_the_encoding_read_is_recorded(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(LATIN1.encode("latin-1"))
    (tmp_path / "u.csv").write_bytes("a\nb\n".encode("utf-16"))
    add_dataset(repo, "d", tmp_path / "d.csv", encoding="latin1")
    add_dataset(repo, "u", tmp_path / "u.csv")
    assert resolve(repo, "d").transformation["sources"][0]["encoding"] == "iso8859-1"
    assert resolve(repo, "u").transformation["sources"][0]["encoding"] == "utf-16"


def test_a_folder_of_csvs_is_typed_as_one_table(repo: Repository, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "1.csv").write_text("id,n\n1,7\n")
    (folder / "2.csv").write_text("id,n\n02,8\n")  # one 02 makes the id column text
    added = add_dataset(repo, "f", folder)
    assert read_table(repo, "f").to_pylist() == [{"id": "1", "n": 7}, {"id": "02", "n": 8}]
    assert [c["type"] for c in added.version.columns] == ["string", "int64"]


def test_a_folder_may_widen_integers_to_floats_when_exact(repo: Repository, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "1.jsonl").write_bytes(_lines('{"n": 3}'))
    pq.write_table(pa.table({"n": [0.5]}), folder / "2.parquet")
    add_dataset(repo, "f", folder)
    assert read_table(repo, "f").to_pylist() == [{"n": 3.0}, {"n": 0.5}]
