"""Reading files to add as a dataset version: CSV, JSON Lines, Parquet, or a directory of them.

Everything becomes one Arrow table. A file that cannot be read is refused with its path, and
where the format has lines, the line and the column at fault; nothing is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fmforge.errors import InvalidDataSource

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def read_source(path: Path) -> pa.Table:
    """The rows of ``path`` (a file, or a directory whose supported files share one schema)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise InvalidDataSource(f"{path}: no .csv, .jsonl or .parquet files in this directory")
        tables = [read_file(f) for f in files]
        first = tables[0].schema
        for file, table in zip(files[1:], tables[1:], strict=True):
            if set(table.column_names) != set(first.names):
                raise InvalidDataSource(
                    f"{file}: columns {_columns(table.schema)} differ from {files[0].name}'s "
                    f"{_columns(first)}; files of one dataset share one schema"
                )
        try:  # the same columns; types inferred per file may differ in width (int/float, units)
            return pa.concat_tables(
                [t.select(first.names) for t in tables], promote_options="permissive"
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise InvalidDataSource(
                f"{path}: the files' column types cannot be reconciled ({_first_line(error)})"
            ) from None
    if not path.exists():
        raise InvalidDataSource(f"{path}: no such file or directory")
    return read_file(path)


def read_file(path: Path) -> pa.Table:
    kind = FORMATS.get(path.suffix.lower())
    if kind == "csv":
        return _read_csv(path)
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "parquet":
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise InvalidDataSource(f"{path}: not a readable Parquet file ({error})") from None
    raise InvalidDataSource(
        f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or .parquet)"
    )


def _read_csv(path: Path) -> pa.Table:
    bad: list[Any] = []

    def refuse(row: Any) -> str:
        bad.append(row)
        return "error"

    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),  # serial: rows know their line
            parse_options=pacsv.ParseOptions(invalid_row_handler=refuse),
        )
    except pa.ArrowInvalid as error:
        if bad:
            row = bad[0]
            where = f"line {row.number}" if row.number is not None else "a line"
            raise InvalidDataSource(
                f"{path}: {where} has {row.actual_columns} fields where the header has "
                f"{row.expected_columns}: {row.text[:80]!r}"
            ) from None
        raise InvalidDataSource(f"{path}: malformed CSV ({_first_line(error)})") from None


def _read_jsonl(path: Path) -> pa.Table:
    rows: list[dict[str, Any]] = []
    kinds: dict[str, tuple[str, int]] = {}  # column -> (kind, line it was first seen on)
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise InvalidDataSource(
                    f"{path}: line {number}: malformed JSON ({error})"
                ) from None
            if not isinstance(record, dict):
                raise InvalidDataSource(
                    f"{path}: line {number}: a record must be a JSON object, got {_kind(record)}"
                )
            for column, value in record.items():
                kind = _kind(value)
                if kind == "null":
                    continue
                seen = kinds.setdefault(column, (kind, number))
                if seen[0] != kind and {seen[0], kind} != {"integer", "number"}:
                    raise InvalidDataSource(
                        f"{path}: line {number}, column {column!r}: a {kind} where line "
                        f"{seen[1]} has a {seen[0]}"
                    )
            rows.append(record)
    if not rows:
        raise InvalidDataSource(f"{path}: no records")
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InvalidDataSource(f"{path}: {_first_line(error)}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
