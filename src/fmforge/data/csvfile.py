"""CSV files as Arrow tables: every value read as text, then typed only where typing is exact.

The first record is the header: its names must be distinct (and not ``_row_id``). Quoted fields
may hold commas, quotes and newlines (RFC 4180); blank lines are skipped; a record with more or
fewer fields than the header is refused naming its line. An unquoted empty field is null, a
quoted one (``""``) the empty string, as DuckDB reads them.

A column is then typed by the narrowest type that gives back every value as written:

- ``int64`` when every value is an integer written plainly (``-12``, not ``012``, ``+12`` or
  ``1_000``) within 64 bits;
- ``float64`` when every value is a JSON-style number (``1.5``, ``-2e-3``, ``7``) that a 64-bit
  float holds to the digits given (see ``jsonlfile.float_problem``; integers exactly);
- ``bool`` when every value is ``true`` or ``false``;
- else text, exactly as written: dates, ``NA``, ``01234`` and numbers no type holds stay text.

Nulls do not count against a type. The file is read a block at a time (``csv_text_batches``)
and typed by ``TextTyping``, which keeps per column only what every value seen so far allows:
one pass decides the types, a second applies them. The typing of several files can be shared,
so that a folder of CSVs is typed as one table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fmforge.data.jsonlfile import float_problem
from fmforge.data.storage import ROW_ID
from fmforge.data.textfiles import DecodedStream
from fmforge.errors import InvalidDataSource

MAX_COLUMNS = 10_000
RECORD_BYTES = 16 << 20  # records up to this long are read (Arrow's block: up to twice is)
FIRST_BLOCK = 1 << 20  # the block read first: a file with longer records is read again
_INTEGER = r"^(?:0|-?[1-9][0-9]*)$"
_NUMBER = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$"
_TEXT_TYPES = {f"f{i}": pa.string() for i in range(MAX_COLUMNS + 1)}


def _locate(line: int, character: int, line_text: str, record_start: bool, first: str) -> str:
    """Where a problem is: the line, and the column when the line starts a record."""
    where = f"line {line}, character {character}"
    if line == 1 or not record_start:
        return where
    try:
        header = next(csv.reader([first]), [])
        index = max(len(next(csv.reader([line_text]), [])), 1) - 1
    except csv.Error:  # a field beyond the csv module's limit: say the line only
        return where
    if 0 <= index < len(header):
        return f"line {line}, column {header[index]!r} (character {character})"
    return where


def read_csv_text(path: Path, encoding: str | None = None) -> pa.Table:
    """The records of a CSV file, every column text (``type_columns`` types them)."""
    parts = list(csv_text_batches(path, encoding))
    return pa.concat_tables(parts)


def csv_text_batches(path: Path, encoding: str | None = None) -> Iterator[pa.Table]:
    """The records of a CSV file a block at a time (memory bounded by the block), every column
    text, named by the header; refused as soon as a problem is read. Blocks of ``FIRST_BLOCK``
    bytes are read first; a record too long for them has the file read again in blocks of
    ``RECORD_BYTES``, from where it was."""
    given = 0
    try:
        for table in _blocks(path, encoding, FIRST_BLOCK, 0):
            given += table.num_rows
            yield table
    except _Straddles:
        yield from _blocks(path, encoding, RECORD_BYTES, given)


class _Straddles(Exception):
    """A record longer than the block (only raised for blocks shorter than RECORD_BYTES)."""


def _blocks(path: Path, encoding: str | None, block: int, skip: int) -> Iterator[pa.Table]:
    bad: list[Any] = []

    def refuse(row: Any) -> str:
        bad.append(row)
        return "error"

    with path.open("rb") as raw:
        stream = DecodedStream(path, raw, encoding, _locate)
        names: list[str] | None = None
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    use_threads=False,  # serial: a refused row knows its number
                    block_size=block,
                    autogenerate_column_names=True,  # the header is read as text, like the rest
                ),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=refuse
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=_TEXT_TYPES,
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    null_values=[""],
                ),
            )
            if len(reader.schema) > MAX_COLUMNS:
                raise InvalidDataSource(f"{path}: more than {MAX_COLUMNS:,} columns")
            for batch in reader:
                table = pa.Table.from_batches([batch])
                if names is None:
                    first = table.slice(0, 1).to_pylist()[0].values()
                    names = ["" if name is None else str(name) for name in first]
                    _check_header(path, names)
                    table = table.slice(1)
                if skip:
                    dropped = min(skip, table.num_rows)
                    table, skip = table.slice(dropped), skip - dropped
                yield table.rename_columns(names)
        except pa.ArrowInvalid as error:
            if block < RECORD_BYTES and not bad and "straddl" in str(error):
                raise _Straddles from None
            raise _malformed(path, encoding, error, bad) from None


def _check_header(path: Path, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if name in seen:
            raise InvalidDataSource(
                f"{path}: line 1: the column name {name!r} appears twice (columns "
                f"{seen[name]} and {number}); names must be distinct"
            )
        seen[name] = number
    if ROW_ID in seen:
        raise InvalidDataSource(
            f"{path}: line 1, column {seen[ROW_ID]}: the name {ROW_ID!r} is reserved for row ids"
        )


def _malformed(
    path: Path, encoding: str | None, error: pa.ArrowInvalid, bad: list[Any]
) -> InvalidDataSource:
    text = str(error).strip().splitlines()[0] if str(error).strip() else "malformed"
    if bad:
        row = bad[0]
        line = _record_line(path, encoding, row.number) if row.number is not None else None
        where = f"line {line}" if line is not None else f"record {row.number}"
        return InvalidDataSource(
            f"{path}: {where} has {row.actual_columns} fields where the header has "
            f"{row.expected_columns}: {row.text[:80]!r}"
        )
    if "Empty CSV file" in text:
        return InvalidDataSource(f"{path}: an empty file (no header line)")
    if "straddl" in text:
        return InvalidDataSource(
            f"{path}: a record too long (a CSV record may hold {RECORD_BYTES >> 20} MiB), or an "
            "unclosed quote"
        )
    return InvalidDataSource(f"{path}: malformed CSV ({text})")


def _record_line(path: Path, encoding: str | None, record: int) -> int | None:
    """The line where the ``record``-th non-blank record starts (the header is record 1)."""
    with path.open("rb") as raw:
        stream = DecodedStream(path, raw, encoding)
        text = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8", newline="")
        reader = csv.reader(text)
        seen, start = 0, 1
        try:
            for fields in reader:
                if fields:
                    seen += 1
                    if seen == record:
                        return start
                start = reader.line_num + 1
        except csv.Error:  # a field beyond the csv module's limit: the record number will do
            return None
    return None


def type_columns(table: pa.Table) -> pa.Table:
    """Each text column as the narrowest type that gives back every value as written."""
    typings = {name: TextTyping() for name in table.column_names}
    for name, typing in typings.items():
        typing.update(table.column(name))
    columns = [typings[name].apply(table.column(name)) for name in typings]
    return pa.Table.from_arrays(columns, names=list(typings))  # pa.table would import pandas


class TextTyping:
    """What every value of one text column seen so far allows, fed a block at a time: the
    column's type is then the narrowest that gives back each of them as written."""

    def __init__(self) -> None:
        self.present = False  # a value that is not null
        self.integers = True  # every value an integer written plainly...
        self.fits = True  # ...within 64 bits
        self.numbers = True  # every value a JSON-style number a float64 holds as written
        self.booleans = True  # every value true or false
        self.bounds: tuple[int, int] | None = None  # of the integers, while they fit

    def update(self, values: pa.ChunkedArray | pa.Array) -> None:
        present = pc.drop_null(values)
        if len(present) == 0:
            return
        self.present = True
        if self.integers and pc.all(pc.match_substring_regex(present, _INTEGER)).as_py():
            if self.fits:
                try:
                    bounds = pc.min_max(pc.cast(present, pa.int64())).as_py()
                except pa.ArrowInvalid:
                    self.fits = False  # beyond 64 bits: perhaps exact as a float, else text
                else:
                    low, high = bounds["min"], bounds["max"]
                    if self.bounds is not None:
                        low, high = min(low, self.bounds[0]), max(high, self.bounds[1])
                    self.bounds = (low, high)
        else:
            self.integers = False
        self.numbers = (
            self.numbers
            and pc.all(pc.match_substring_regex(present, _NUMBER)).as_py()
            and _floats_exact(present)
        )
        self.booleans = self.booleans and bool(
            pc.all(pc.is_in(present, pa.array(["true", "false"]))).as_py()
        )

    def type(self) -> pa.DataType:
        if not self.present:
            return pa.string()
        if self.integers and self.fits:
            return pa.int64()
        if self.numbers:
            return pa.float64()
        if self.booleans:
            return pa.bool_()
        return pa.string()

    def apply(self, values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """``values`` (text) as ``type()``."""
        kind = self.type()
        if kind == pa.bool_():
            return pc.equal(values, "true")
        return values if kind == pa.string() else pc.cast(values, kind)


def _floats_exact(numbers: pa.ChunkedArray | pa.Array) -> bool:
    """Whether every number (JSON syntax) is held by a float64 as written. Short numbers without
    an exponent are (15 digits or fewer); the others are checked one by one."""
    long = pc.or_(
        pc.greater(pc.utf8_length(numbers), 15), pc.match_substring_regex(numbers, "[eE]")
    )
    for text in pc.filter(numbers, long).to_pylist():
        if any(c in text for c in ".eE"):
            if float_problem(text) is not None:
                return False
        elif Decimal(text) != Decimal(float(text)):  # an integer: exactly, or not at all
            return False
    return True
