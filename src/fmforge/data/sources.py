"""Reading files to add as a dataset version: CSV, JSON Lines, Parquet, or a directory of them.

The rows come out exactly as the files hold them, or the files are refused naming the file and,
where the format has lines, the line and the column at fault; nothing is recorded either way.
``Source`` reads the files twice, a batch at a time, so memory stays bounded by the batch
whatever their size: the first pass refuses what must be refused and decides the column types
(a CSV column's needs every value), the second gives the rows.

Text files are decoded as ``textfiles`` says (UTF-8 unless a byte-order mark or the
``encoding`` given says otherwise; no NUL), CSV values typed as ``csvfile`` says (a type only
where it gives back every value as written), JSON values kept as ``jsonlfile`` says (exact or
refused). Parquet files keep their types; types the store cannot give back exactly
(decimals, half floats, durations, unions, extension types) are refused, as is text that is not
UTF-8 or holds NUL.

A directory's files (found recursively by extension; other files are ignored) must share one
set of columns. Its CSV files are typed together, as one table. Where files give a column
different types, integers widen to floats only when every integer is exact as a float; any other
difference is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmforge.data.csvfile import TextTyping, csv_text_batches
from fmforge.data.jsonlfile import conform, jsonl_batches, unify
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
BATCH_ROWS = 65536


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
    source = Source(path, encoding)
    return pa.Table.from_batches(list(source.batches()), source.schema)


def read_file(path: Path, encoding: str | None = None) -> pa.Table:
    """One file's rows."""
    source = Source(path, encoding, files=[path])
    return pa.Table.from_batches(list(source.batches()), source.schema)


@dataclass
class _Part:
    """Files read as one: every CSV file (typed together), or one JSON Lines or Parquet file."""

    kind: str
    files: list[Path]
    schema: pa.Schema  # the part's columns and types
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)  # integer columns

    @property
    def file(self) -> Path:
        """The file messages name."""
        return self.files[0]


class Source:
    """Files to add, read through once on creation (every refusal happens then, before
    anything is stored) and then as often as asked, a batch at a time: memory stays bounded
    by the batch (``batch_rows`` rows), whatever the files' size.

    The first pass keeps per column only what deciding its type needs: what every CSV value
    allows (``TextTyping``), each JSON Lines batch's types, the bounds of integer columns (to
    widen them to floats exactly). The second reads the files again and gives the rows their
    final types. Rows come in the order ``read_source`` has always given: every CSV file's
    first, in file order, then the other files', in file order."""

    def __init__(
        self,
        path: Path,
        encoding: str | None = None,
        *,
        batch_rows: int = BATCH_ROWS,
        files: list[Path] | None = None,
    ) -> None:
        self.encoding = encoding
        self.batch_rows = batch_rows
        self.typing: dict[str, TextTyping] = {}
        self.parts = self._scan(files if files is not None else _files(path, encoding))
        names = self.parts[0].schema.names
        self.names = names
        if len(self.parts) == 1:
            self.schema = self.parts[0].schema
        else:
            self.schema = _unify(self.parts)

    def _scan(self, files: list[Path]) -> list[_Part]:
        texts: list[Path] = []
        parts: list[_Part] = []
        seen: list[tuple[Path, pa.Schema]] = []
        for file in files:
            kind = FORMATS.get(file.suffix.lower())
            if kind == "csv":
                schema = None
                for table in csv_text_batches(file, self.encoding):
                    schema = table.schema
                    for name in table.column_names:
                        self.typing.setdefault(name, TextTyping()).update(table.column(name))
                if schema is None:  # csv_text_batches refuses an empty file: never here
                    raise InvalidDataSource(f"{file}: an empty file (no header line)")
                texts.append(file)
                seen.append((file, schema))
            elif kind == "jsonl":
                bounds: dict[str, tuple[int, int]] = {}
                schemas = []
                for table in jsonl_batches(file, self.encoding, self.batch_rows):
                    schemas.append(table.schema)
                    _widen_bounds(bounds, table)
                part = _Part("jsonl", [file], unify(file, schemas), bounds)
                parts.append(part)
                seen.append((file, part.schema))
            elif kind == "parquet":
                part = _scan_parquet(file, self.batch_rows)
                parts.append(part)
                seen.append((file, part.schema))
            else:
                raise InvalidDataSource(
                    f"{file}: unsupported file type {file.suffix!r} (use .csv, .jsonl or .parquet)"
                )
        first_file, first = seen[0]
        for file, schema in seen[1:]:
            if set(schema.names) != set(first.names):
                raise InvalidDataSource(
                    f"{file}: columns {_columns(schema)} differ from {first_file.name}'s "
                    f"{_columns(first)}; files of one dataset share one schema"
                )
        names = first.names
        if texts:
            typed = pa.schema([pa.field(n, self.typing[n].type()) for n in names])
            bounds = {
                n: b
                for n in names
                if typed.field(n).type == pa.int64() and (b := self.typing[n].bounds) is not None
            }
            parts.insert(0, _Part("csv", texts, typed, bounds))
        for part in parts:
            part.schema = pa.schema([part.schema.field(n) for n in names])
        return parts

    def batches(self) -> Iterator[pa.Table]:
        """The rows, ``batch_rows`` at a time, with ``schema``'s columns and types."""
        for part in self.parts:
            for table in self._read(part):
                try:
                    final = table.select(self.names).cast(self.schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
                    raise InvalidDataSource(
                        f"{part.file.parent}: the files' column types cannot be reconciled "
                        f"({_first_line(error)})"
                    ) from None
                yield from final.to_batches(max_chunksize=self.batch_rows)

    def _read(self, part: _Part) -> Iterator[pa.Table]:
        if part.kind == "csv":
            for file in part.files:
                for table in csv_text_batches(file, self.encoding):
                    typed = [self.typing[n].apply(table.column(n)) for n in self.names]
                    yield pa.Table.from_arrays(typed, names=self.names)  # no pandas import
        elif part.kind == "jsonl":
            file = part.file
            for table in jsonl_batches(file, self.encoding, self.batch_rows, checked=True):
                yield conform(table, part.schema)
        else:
            for table in _parquet_batches(part.file, self.batch_rows):
                yield table.select(part.schema.names).cast(part.schema)


def _files(path: Path, encoding: str | None) -> list[Path]:
    if encoding is not None:
        codec_name(encoding)
    if path.is_dir():
        files = source_files(path)
        if not files:
            raise InvalidDataSource(f"{path}: no .csv, .jsonl or .parquet files in this directory")
        return files
    if not path.exists():
        raise InvalidDataSource(f"{path}: no such file or directory")
    if not path.is_file():
        raise InvalidDataSource(f"{path}: not a regular file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidDataSource(
            f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or .parquet)"
        )
    if kind == "parquet" and encoding is not None:
        raise UsageError("--encoding applies to CSV and JSON Lines files, not Parquet")
    return [path]


def _widen_bounds(bounds: dict[str, tuple[int, int]], table: pa.Table) -> None:
    """Fold the bounds of ``table``'s integer columns into ``bounds``."""
    for field_, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_integer(field_.type) and column.null_count < len(column):
            found = pc.min_max(column).as_py()
            low, high = found["min"], found["max"]
            if field_.name in bounds:
                low = min(low, bounds[field_.name][0])
                high = max(high, bounds[field_.name][1])
            bounds[field_.name] = (low, high)


def _unify(parts: list[_Part]) -> pa.Schema:
    """One schema for parts with the same columns; a column's types must agree, or be
    integers and floats that widen exactly."""
    fields = []
    for name in parts[0].schema.names:
        kinds = [(part, part.schema.field(name).type) for part in parts]
        present = [(part, kind) for part, kind in kinds if not pa.types.is_null(kind)]
        target = present[0][1] if present else pa.null()
        if any(kind != target for _, kind in present):
            target = _widened(name, present)
        fields.append(pa.field(name, target))
    return pa.schema(fields)


def _widened(name: str, present: list[tuple[_Part, pa.DataType]]) -> pa.DataType:
    first_part, first = present[0]
    numeric = [pa.types.is_integer(k) or pa.types.is_floating(k) for _, k in present]
    if not all(numeric):
        part, kind = next((p, k) for p, k in present if k != first)
        raise InvalidDataSource(
            f"{part.file}: column {name!r} is {kind} where {first_part.file.name} has {first}; "
            "files of one dataset share one schema"
        )
    floats = [p.file for p, k in present if pa.types.is_floating(k)]
    target = pa.float64() if floats else pa.int64()
    for part, kind in present:
        if not pa.types.is_integer(kind) or name not in part.bounds:
            continue
        low, high = part.bounds[name]
        limit = _EXACT_INT if floats else (1 << 63) - 1
        if max(abs(low), abs(high)) > limit:
            other = f"{floats[0].name} holds fractions" if floats else "the column is int64"
            raise InvalidDataSource(
                f"{part.file}: column {name!r} holds the integer "
                f"{high if abs(high) > limit else low}, which cannot stay exact where {other}"
            )
    return target


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError, MemoryError) as error:
        raise InvalidDataSource(
            f"{path}: not a readable Parquet file ({_first_line(error)})"
        ) from None


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pa.Table]:
    handle = _open_parquet(path)
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, use_threads=False):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError, ValueError, MemoryError) as error:
        raise InvalidDataSource(
            f"{path}: not a readable Parquet file ({_first_line(error)})"
        ) from None
    finally:
        handle.close()


def _scan_parquet(path: Path, batch_rows: int) -> _Part:
    """A Parquet file read through, refused if a type or a string cannot be stored exactly."""
    schema = _open_parquet(path).schema_arrow
    names = schema.names
    if not names:
        raise InvalidDataSource(f"{path}: no columns")
    schema = pa.schema([f.with_type(_arrow_lists(f.type)) for f in schema])
    for number, name in enumerate(names, 1):
        if names.index(name) != number - 1:
            raise InvalidDataSource(
                f"{path}: the column name {name!r} appears twice (columns "
                f"{names.index(name) + 1} and {number}); names must be distinct"
            )
    if ROW_ID in names:
        raise InvalidDataSource(f"{path}: the column name {ROW_ID!r} is reserved for row ids")
    for field_ in schema:
        if not _storable(field_.type):
            raise InvalidDataSource(
                f"{path}: column {field_.name!r} is {field_.type}, which fmforge cannot store "
                "exactly (cast it to int64, float64 or string)"
            )
    bounds: dict[str, tuple[int, int]] = {}
    rows = 0
    for table in _parquet_batches(path, batch_rows):
        table = table.cast(schema)
        _check_text(path, table, rows)
        _widen_bounds(bounds, table)
        rows += table.num_rows
    return _Part("parquet", [path], schema, bounds)


def _check_text(path: Path, table: pa.Table, rows: int) -> None:
    """Text that is UTF-8 and holds no NUL (``rows``: rows of the file before ``table``)."""
    for field_ in table.schema:
        column = table.column(field_.name)
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            raise InvalidDataSource(
                f"{path}: column {field_.name!r} holds text that is not valid UTF-8"
            ) from None
        if pa.types.is_string(field_.type) or pa.types.is_large_string(field_.type):
            hits = pc.match_substring(column, "\0")
            if pc.any(hits).as_py():
                row = rows + pc.index(hits, True).as_py() + 1
                raise InvalidDataSource(
                    f"{path}: row {row}, column {field_.name!r}: a NUL character; text may not "
                    "hold NUL"
                )


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
