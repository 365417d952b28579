"""JSON Lines files as Arrow tables, every value kept exactly or the file refused.

One JSON object per line (blank lines are skipped); a key missing from a record is null there.
What is refused, naming the line and the column (``meta.tags[]`` for values inside objects and
lists): malformed JSON; a line that is not an object; a key twice in one object (JSON parsers
disagree on which wins); an integer outside 64 bits; a number with a fraction or an exponent
that a 64-bit float cannot hold to the digits given (more than 17 significant digits, unless the
digits are the float's exact value; out of range; a non-zero value that rounds to zero);
``NaN`` and ``Infinity``; an integer beyond 2^53 in a column that also holds fractions (it would
become a float); a NUL character or an unpaired surrogate in a string; values nested more than
``MAX_DEPTH`` deep; a column whose values are of two kinds (a string here, a number there).
"""

from __future__ import annotations

import io
import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from fmforge.data.storage import ROW_ID
from fmforge.data.textfiles import DecodedStream
from fmforge.errors import InvalidDataSource

MAX_DEPTH = 32
_INT64 = 1 << 63
_EXACT_INT = 1 << 53  # integers up to this are exact as float64


def float_problem(text: str) -> str | None:
    """Why the decimal ``text`` (with a fraction or exponent) is not held by a float64, or None."""
    value = float(text)
    if not math.isfinite(value):
        return "is out of a 64-bit float's range"
    mantissa = text.lstrip("+-").split("e")[0].split("E")[0]
    digits = mantissa.replace(".", "").strip("0")
    if value == 0:
        return "rounds to zero as a 64-bit float" if digits else None
    if len(digits) <= 17 or Decimal(text) == Decimal(value):
        return None
    return "has more digits than a 64-bit float holds (17)"


@dataclass(frozen=True)
class _Bad:
    """A number the parser met that cannot be stored; refused once its column is known."""

    text: str
    why: str


class _Refused(Exception):
    """A value refused: ``where`` is ", column 'x'" or empty, ``what`` the problem."""

    def __init__(self, what: str, where: str = "") -> None:
        super().__init__(what)
        self.what, self.where = what, where


def _text_problem(text: str) -> str | None:
    if "\0" in text:
        return "a NUL character (\\u0000); text may not hold NUL"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as problem:
            return f"an unpaired surrogate \\u{ord(text[problem.start]):04x}; not text"
    return None


def _parse_int(text: str) -> int | _Bad:
    if len(text.lstrip("-")) > 19:
        return _Bad(text, "is outside the 64-bit integer range")
    return int(text)


def _parse_float(text: str) -> float | _Bad:
    why = float_problem(text)
    return float(text) if why is None else _Bad(text, why)


def _parse_constant(text: str) -> _Bad:
    return _Bad(text, "is not a JSON number (JSON has no NaN or Infinity)")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return record


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
)


@dataclass
class _Shape:
    """What one column (or path inside it) has held so far."""

    kind: str
    line: int
    fraction_line: int = 0  # first line with a number that is not an integer
    wide: tuple[int, int] | None = None  # (line, value): first integer beyond 2^53


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _path(path: tuple[str, ...]) -> str:
    text = "".join(p if p == "[]" or i == 0 else f".{p}" for i, p in enumerate(path))
    return repr(text if len(text) <= 60 else text[:57] + "...")


class _Checker:
    def __init__(self) -> None:
        self.shapes: dict[tuple[str, ...], _Shape] = {}
        self.line = 0

    def refuse(self, path: tuple[str, ...], what: str) -> _Refused:
        return _Refused(what, f", column {_path(path)}")

    def check(self, value: Any, path: tuple[str, ...], depth: int = 0) -> None:
        kind = type(value)
        if value is None:
            return
        if kind is str:
            problem = _text_problem(value)
            if problem is not None:
                raise self.refuse(path, problem)
            name = "string"
        elif kind is bool:
            name = "boolean"
        elif kind is int:
            if not -_INT64 <= value < _INT64:
                raise self.refuse(path, f"{value} is outside the 64-bit integer range")
            name = "integer"
        elif kind is float:
            name = "number"
        elif kind is _Bad:
            raise self.refuse(path, f"{value.text[:40]} {value.why}")
        elif depth >= MAX_DEPTH:
            raise self.refuse(path, f"values nested more than {MAX_DEPTH} levels deep")
        elif kind is list:
            name = "list"
            inner = (*path, "[]")
            for item in value:
                self.check(item, inner, depth + 1)
        else:
            name = "object"
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    raise self.refuse(path, f"a key with {problem}")
                self.check(item, (*path, key), depth + 1)
        self._kind(value, name, path)

    def _kind(self, value: Any, name: str, path: tuple[str, ...]) -> None:
        shape = self.shapes.get(path)
        if shape is None:
            shape = self.shapes[path] = _Shape(name, self.line)
        elif shape.kind != name and {shape.kind, name} != {"integer", "number"}:
            raise self.refuse(path, f"{_a(name)} where line {shape.line} has {_a(shape.kind)}")
        if name == "number" and not shape.fraction_line:
            shape.fraction_line = self.line
        elif name == "integer" and abs(value) > _EXACT_INT and shape.wide is None:
            shape.wide = (self.line, value)
        if shape.fraction_line and shape.wide is not None:
            wide_line, wide = shape.wide
            raise self.refuse(
                path,
                f"the integer {wide} (line {wide_line}) cannot stay exact in a column that "
                f"also holds fractions (line {shape.fraction_line}); quote it as a string",
            )


def _lines(path: Path, encoding: str | None) -> Iterator[tuple[int, str]]:
    with path.open("rb") as raw:
        stream = io.BufferedReader(DecodedStream(path, raw, encoding), 1 << 20)
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield number, line.decode("utf-8").rstrip("\r\n")


def read_jsonl(path: Path, encoding: str | None = None) -> pa.Table:
    """A JSON Lines file's rows, exactly, or the file refused."""
    parts = list(jsonl_batches(path, encoding))
    schema = unify(path, [part.schema for part in parts])
    return pa.concat_tables([conform(part, schema) for part in parts])


def jsonl_batches(
    path: Path, encoding: str | None = None, batch_rows: int = 65536, *, checked: bool = False
) -> Iterator[pa.Table]:
    """The records of a JSON Lines file, ``batch_rows`` at a time, each batch typed by its own
    values (``unify`` gives the file's types, ``conform`` a batch to them); refused as soon as
    a problem is read. Memory is bounded by the batch. ``checked``: the file was read through
    once already without a refusal, so the values need no second check."""
    columns: dict[str, list[Any]] = {}
    lines = array("q")  # the line of each record in the batch
    checker = _Checker()
    records = 0
    named = False
    for number, line in _lines(path, encoding):
        checker.line = number
        try:
            record = _DECODER.decode(line)
            if not isinstance(record, dict):
                raise _Refused(f"a record must be a JSON object, not {_kind_of(record)}")
            rows = len(lines)
            for key, value in record.items():
                column = columns.get(key)
                if column is None:
                    problem = _text_problem(key)
                    if problem is not None:
                        raise _Refused(f"a column name with {problem}")
                    if key == ROW_ID:
                        raise _Refused(f"the column name {ROW_ID!r} is reserved for row ids")
                    column = columns[key] = [None] * rows
                if not checked:
                    checker.check(value, (key,))
                column.append(value)
        except json.JSONDecodeError as problem:
            raise InvalidDataSource(
                f"{path}: line {number}, character {problem.colno}: malformed JSON ({problem.msg})"
            ) from None
        except _Refused as problem:
            raise InvalidDataSource(
                f"{path}: line {number}{problem.where}: {problem.what}"
            ) from None
        except RecursionError:
            raise InvalidDataSource(f"{path}: line {number}: nested too deeply to parse") from None
        for column in columns.values():
            if len(column) == rows:
                column.append(None)
        lines.append(number)
        records += 1
        if len(lines) == batch_rows:
            named = named or bool(columns)
            yield _table(path, columns, lines)
            columns = {name: [] for name in columns}
            lines = array("q")
    if not records:
        raise InvalidDataSource(f"{path}: no records")
    if not (named or columns):
        raise InvalidDataSource(f"{path}: no columns (every record is {{}})")
    if lines:
        yield _table(path, columns, lines)


def _table(path: Path, columns: dict[str, list[Any]], lines: array[int]) -> pa.Table:
    if not columns:  # records of {} so far: a placeholder keeps their count
        return pa.Table.from_arrays([pa.nulls(len(lines))], names=[ROW_ID])
    arrays = [_array(path, name, values, lines) for name, values in columns.items()]
    return pa.Table.from_arrays(arrays, names=list(columns))  # pa.table would import pandas


def unify(path: Path, schemas: list[pa.Schema]) -> pa.Schema:
    """The types of a file's columns, from those of its batches (a column of integers in one
    batch and of fractions in another holds floats, the checker having made sure they are
    exact; objects hold every key any batch gave them)."""
    schemas = [pa.schema([f for f in schema if f.name != ROW_ID]) for schema in schemas]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else "types differ"
        raise InvalidDataSource(f"{path}: the lines give a column two types ({text})") from None
    for field in schema:
        if _has_empty_struct(field.type):
            raise InvalidDataSource(
                f"{path}: column {field.name!r} holds objects without keys ({{}}) only; there is "
                "nothing to store"
            )
    return schema


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (a batch) with ``schema``'s columns, in its order and of its types."""
    columns = [
        table.column(field.name)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, pa.null())
        for field in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def _array(path: Path, name: str, values: list[Any], lines: array[int]) -> pa.Array:
    try:
        built = pa.array(values)
    except (pa.ArrowException, OverflowError, ValueError, TypeError):
        low, high = 1, len(values)  # the shortest prefix that fails
        while low < high:
            middle = (low + high) // 2
            try:
                pa.array(values[:middle])
                low = middle + 1
            except (pa.ArrowException, OverflowError, ValueError, TypeError):
                high = middle
        raise InvalidDataSource(
            f"{path}: line {lines[low - 1]}, column {name!r}: its value does not fit the type "
            "the lines before gave the column"
        ) from None
    return built


def _has_empty_struct(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_has_empty_struct(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_empty_struct(kind.value_type)
    return False


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
