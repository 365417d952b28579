"""Reading files to add as a dataset version: CSV, JSON Lines, Parquet, or a directory of them.

Everything becomes one Arrow table holding exactly what the files hold, or the files are refused
naming the file and, where the format has lines, the line and the column at fault; nothing is
recorded either way. Text files are decoded as ``textfiles`` says (UTF-8 unless a byte-order mark
or the ``encoding`` given says otherwise; no NUL), CSV values typed as ``csvfile`` says (a type
only where it gives back every value as written), JSON values kept as ``jsonlfile`` says (exact
or refused). Parquet files keep their types; types the store cannot give back exactly
(decimals, half floats, durations, unions, extension types) are refused, as is text that is not
UTF-8 or holds NUL.

A directory's files (found recursively by extension; other files are ignored) must share one
set of columns. Its CSV files are typed together, as one table. Where files give a column
different types, integers widen to floats only when every integer is exact as a float; any other
difference is refused.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmforge.data.csvfile import read_csv_text, type_columns
from fmforge.data.jsonlfile import read_jsonl
from fmforge.data.storage import ROW_ID
from fmforge.data.textfiles import codec_name, file_encoding
from fmforge.errors import InvalidDataSource, UsageError

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
_EXACT_INT = 1 << 53


def source_files(path: Path) -> list[Path]:
    """The files ``read_source(path)`` reads, in the order it reads them."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    return [path]


def text_encoding(path: Path, encoding: str | None) -> str | None:
    """The encoding a source file is read with (None for Parquet), to record with the version."""
    if FORMATS.get(path.suffix.lower()) in ("csv", "jsonl"):
        return file_encoding(path, encoding)
    return None


def read_source(path: Path, encoding: str | None = None) -> pa.Table:
    """The rows of ``path`` (a file, or a directory whose supported files share one schema).
    ``encoding``: the text files' encoding, when it is not UTF-8 (or UTF-16/32 with a mark)."""
    if encoding is not None:
        codec_name(encoding)
    if path.is_dir():
        files = source_files(path)
        if not files:
            raise InvalidDataSource(f"{path}: no .csv, .jsonl or .parquet files in this directory")
    elif not path.exists():
        raise InvalidDataSource(f"{path}: no such file or directory")
    elif not path.is_file():
        raise InvalidDataSource(f"{path}: not a regular file")
    else:
        files = [path]
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise InvalidDataSource(
                f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or .parquet)"
            )
        if kind == "parquet" and encoding is not None:
            raise UsageError("--encoding applies to CSV and JSON Lines files, not Parquet")
    return _combine(files, encoding)


def read_file(path: Path, encoding: str | None = None) -> pa.Table:
    """One file's rows."""
    return _combine([path], encoding)


def _combine(files: list[Path], encoding: str | None) -> pa.Table:
    texts: list[tuple[Path, pa.Table]] = []  # CSV files, typed together below
    typed: list[tuple[Path, pa.Table]] = []
    for file in files:
        kind = FORMATS.get(file.suffix.lower())
        if kind == "csv":
            texts.append((file, read_csv_text(file, encoding)))
        elif kind == "jsonl":
            typed.append((file, read_jsonl(file, encoding)))
        elif kind == "parquet":
            typed.append((file, read_parquet(file)))
        else:
            raise InvalidDataSource(
                f"{file}: unsupported file type {file.suffix!r} (use .csv, .jsonl or .parquet)"
            )
    parts = sorted(texts + typed, key=lambda part: files.index(part[0]))
    first_file, first = parts[0]
    for file, table in parts[1:]:
        if set(table.column_names) != set(first.column_names):
            raise InvalidDataSource(
                f"{file}: columns {_columns(table.schema)} differ from {first_file.name}'s "
                f"{_columns(first.schema)}; files of one dataset share one schema"
            )
    names = first.column_names
    if texts:
        csv = type_columns(pa.concat_tables([t.select(names) for _, t in texts]))
        typed.insert(0, (texts[0][0], csv))
    if len(typed) == 1:
        return typed[0][1].select(names)
    return _unify([(file, table.select(names)) for file, table in typed])


def _unify(parts: list[tuple[Path, pa.Table]]) -> pa.Table:
    """One table from tables with the same columns; a column's types must agree, or be
    integers and floats that widen exactly."""
    fields = []
    for name in parts[0][1].column_names:
        kinds = [(file, table.schema.field(name).type) for file, table in parts]
        present = [(file, kind) for file, kind in kinds if not pa.types.is_null(kind)]
        target = present[0][1] if present else pa.null()
        if any(kind != target for _, kind in present):
            target = _widened(name, parts, present)
        fields.append(pa.field(name, target))
    schema = pa.schema(fields)
    try:
        return pa.concat_tables([table.cast(schema) for _, table in parts])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise InvalidDataSource(
            f"{parts[0][0].parent}: the files' column types cannot be reconciled "
            f"({_first_line(error)})"
        ) from None


def _widened(
    name: str, parts: list[tuple[Path, pa.Table]], present: list[tuple[Path, pa.DataType]]
) -> pa.DataType:
    first_file, first = present[0]
    numeric = [pa.types.is_integer(k) or pa.types.is_floating(k) for _, k in present]
    if not all(numeric):
        file, kind = next((f, k) for f, k in present if k != first)
        raise InvalidDataSource(
            f"{file}: column {name!r} is {kind} where {first_file.name} has {first}; "
            "files of one dataset share one schema"
        )
    floats = [f for f, k in present if pa.types.is_floating(k)]
    target = pa.float64() if floats else pa.int64()
    tables = dict(parts)
    for file, kind in present:
        if not pa.types.is_integer(kind):
            continue
        bounds = pc.min_max(tables[file].column(name)).as_py()
        low, high = bounds["min"], bounds["max"]
        if low is None:
            continue
        limit = _EXACT_INT if floats else (1 << 63) - 1
        if max(abs(low), abs(high)) > limit:
            other = f"{floats[0].name} holds fractions" if floats else "the column is int64"
            raise InvalidDataSource(
                f"{file}: column {name!r} holds the integer {high if abs(high) > limit else low},"
                f" which cannot stay exact where {other}"
            )
    return target


def read_parquet(path: Path) -> pa.Table:
    """A Parquet file's rows, refused if a type or a string cannot be stored exactly."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError, MemoryError) as error:
        raise InvalidDataSource(
            f"{path}: not a readable Parquet file ({_first_line(error)})"
        ) from None
    names = table.column_names
    if not names:
        raise InvalidDataSource(f"{path}: no columns")
    table = table.cast(pa.schema([f.with_type(_arrow_lists(f.type)) for f in table.schema]))
    for number, name in enumerate(names, 1):
        if names.index(name) != number - 1:
            raise InvalidDataSource(
                f"{path}: the column name {name!r} appears twice (columns "
                f"{names.index(name) + 1} and {number}); names must be distinct"
            )
    if ROW_ID in names:
        raise InvalidDataSource(f"{path}: the column name {ROW_ID!r} is reserved for row ids")
    for field in table.schema:
        if not _storable(field.type):
            raise InvalidDataSource(
                f"{path}: column {field.name!r} is {field.type}, which fmforge cannot store "
                "exactly (cast it to int64, float64 or string)"
            )
        column = table.column(field.name)
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            raise InvalidDataSource(
                f"{path}: column {field.name!r} holds text that is not valid UTF-8"
            ) from None
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            hits = pc.match_substring(column, "\0")
            if pc.any(hits).as_py():
                row = pc.index(hits, True).as_py() + 1
                raise InvalidDataSource(
                    f"{path}: row {row}, column {field.name!r}: a NUL character; text may not "
                    "hold NUL"
                )
    return table


def _arrow_lists(kind: pa.DataType) -> pa.DataType:
    """``kind`` with Arrow's own name for list items (Parquet writers name them ``element``),
    so that a list column read back from Parquet has the type it was written with."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = kind.value_field
        inner = pa.field("item", _arrow_lists(item.type), item.nullable, item.metadata)
        return pa.list_(inner) if pa.types.is_list(kind) else pa.large_list(inner)
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_arrow_lists(f.type)) for f in kind])
    return kind


def _storable(kind: pa.DataType) -> bool:
    """Types whose values the store hashes and gives back exactly."""
    if pa.types.is_dictionary(kind):
        return _storable(kind.value_type)
    if (
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_float32(kind)
        or pa.types.is_float64(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_time(kind)
    ):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _storable(kind.value_type)
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(f.type) for f in kind)
    if pa.types.is_map(kind):
        return _storable(kind.key_type) and _storable(kind.item_type)
    return False


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
