"""Reading versions: filters and queries over a version (DuckDB, checked by
:mod:`fmforge.data.filters`; a filter reads only the chunks that could match), a version's
first rows, export to files. Diffs between versions are :mod:`fmforge.data.diffs`."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fmforge.access import targets
from fmforge.access.cells import present
from fmforge.access.mediation import mediated
from fmforge.data.diffs import DatasetDiff, diff_datasets
from fmforge.data.filters import run_query, select_stored
from fmforge.data.pushdown import ChunkFilter
from fmforge.data.storage import ROW_ID, layout, manifest_schema, read_rows
from fmforge.data.versions import open_version, read_table, reading
from fmforge.errors import InvalidDataSource
from fmforge.repository import Repository

__all__ = [
    "DatasetDiff",
    "diff_datasets",
    "export_dataset",
    "export_table",
    "head",
    "query",
    "where",
]


@mediated("read", targets.dataset())
def query(repo: Repository, target: str, sql: str) -> pa.Table:
    """Run ``sql``, one ``SELECT`` reading only the version ``target`` as the table ``data``
    (with its ``_row_id`` column), e.g. ``SELECT label, count(*) FROM data GROUP BY label``.
    Anything else (another statement, a file, a table function) is refused: see
    :mod:`fmforge.data.filters`. It sees the version as the caller may (masked columns
    masked)."""
    version, _ = open_version(repo, target)
    table = present(repo, version.dataset, read_table(repo, target, with_ids=True))
    return run_query(table, sql, source=f"query on {target}")


@mediated("read", targets.dataset())
def where(repo: Repository, target: str, condition: str, *, source: str = "--where") -> pa.Table:
    """The rows of ``target`` (with ``_row_id``) for which the filter ``condition``, one SQL
    expression over its columns, holds (:mod:`fmforge.data.filters` gives the grammar). Only
    the chunks whose statistics say they could hold such a row are read."""
    version, manifest = open_version(repo, target)
    schema = manifest_schema(manifest)
    columns = [ROW_ID, *schema.names]

    def read(tree: dict[str, Any]) -> pa.Table:
        chunk_filter = ChunkFilter(tree, schema)
        with reading(repo, version, manifest):
            shape = layout(repo.objects, manifest)
            keep = np.array(
                [chunk_filter.may_match(c.get("stats"), c["rows"]) for c in shape.chunks], bool
            )
            runs = shape.runs[keep[shape.runs[:, 0]]] if len(shape.runs) else shape.runs
            rows = read_rows(repo.objects, manifest, shape, runs).select(columns)
            return present(repo, version.dataset, rows)

    return select_stored(condition, columns, read, source=source, relation=target)


@mediated("read", targets.dataset())
def head(repo: Repository, target: str, rows: int) -> pa.Table:
    """The first ``rows`` rows of ``target``: only the chunks holding them are read."""
    version, manifest = open_version(repo, target)
    with reading(repo, version, manifest):
        shape = layout(repo.objects, manifest)
        table = read_rows(repo.objects, manifest, shape, shape.head(rows))
    return present(repo, version.dataset, table).drop_columns([ROW_ID])


@mediated("export", targets.dataset())
def export_dataset(repo: Repository, target: str, path: Path) -> int:
    """Write the version ``NAME[@REF]`` to ``path`` (``export_table``), as the caller may see
    it; the rows written."""
    version, _ = open_version(repo, target)
    rows = read_table(repo, target, with_ids=True)  # inside this call: as stored
    table = present(repo, version.dataset, rows).drop_columns([ROW_ID])
    export_table(table, path)
    return int(table.num_rows)


def export_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` as CSV, JSON Lines or Parquet, chosen by ``path``'s extension.

    The file is written beside ``path`` under a temporary name and renamed over it once whole:
    a refused or failed export leaves nothing. Values a format cannot hold exactly are refused
    before anything is written: CSV holds flat values, not lists, objects or bytes; JSON has no
    bytes, NaN or infinity. CSV floats keep a decimal point (``1.0``), so that reading the file
    back gives floats again."""
    suffix = path.suffix.lower()
    _check_target(path)
    if suffix not in (".parquet", ".csv", ".jsonl", ".ndjson", ".json"):
        raise InvalidDataSource(f"{path}: export to .csv, .jsonl or .parquet, not {suffix!r}")
    if suffix == ".csv":
        _check_flat(table, path)
    elif suffix != ".parquet":
        _check_json(table, path)
    try:
        with _replacing(path) as out:
            if suffix == ".parquet":
                pq.write_table(table, out, compression="zstd")
            elif suffix == ".csv":
                pacsv.write_csv(_csv_ready(table), out)
            else:
                for batch in table.to_batches(max_chunksize=8192):
                    out.write(
                        b"".join(
                            orjson.dumps(row, default=_json_default) + b"\n"
                            for row in batch.to_pylist()
                        )
                    )
    except (pa.ArrowException, orjson.JSONEncodeError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidDataSource(f"{path}: cannot be written as {suffix}: {text}") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):  # a pandas Timestamp, when pandas is importable
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} value has no JSON form")


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise InvalidDataSource(f"{path}: is a directory; give a file name to export to")
    if path.exists() and not path.is_file():
        raise InvalidDataSource(f"{path}: exists and is not a regular file")
    if not path.parent.is_dir():
        raise InvalidDataSource(f"{path}: no such directory {str(path.parent)!r}")


@contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file beside ``path`` that replaces it when the block ends without an error."""
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise InvalidDataSource(
            f"{path}: cannot write in {str(path.parent)!r}: {error.strerror}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise InvalidDataSource(f"{path}: cannot write it: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_flat(table: pa.Table, path: Path) -> None:
    for item in table.schema:
        kind = item.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_nested(kind):
            raise InvalidDataSource(
                f"{path}: column {item.name!r} is {item.type}; CSV holds flat values only "
                "(export to .jsonl or .parquet)"
            )
        if _is_bytes(kind):
            raise InvalidDataSource(
                f"{path}: column {item.name!r} holds bytes ({item.type}), which CSV cannot "
                "hold exactly; export to .parquet"
            )


def _check_json(table: pa.Table, path: Path) -> None:
    for item in table.schema:
        if _holds(item.type, _is_bytes):
            raise InvalidDataSource(
                f"{path}: column {item.name!r} holds bytes ({item.type}), which JSON cannot "
                "hold exactly; export to .parquet"
            )
        if pa.types.is_floating(item.type):
            column = table.column(item.name)
            bad = pc.invert(pc.is_finite(column))
            if pc.any(bad).as_py():
                row = pc.index(bad, True).as_py() + 1
                raise InvalidDataSource(
                    f"{path}: row {row}, column {item.name!r}: {column[row - 1].as_py()} has "
                    "no JSON form; export to .csv or .parquet"
                )


def _is_bytes(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )  # fmt: skip


def _holds(kind: pa.DataType, test: Any) -> bool:
    if test(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _holds(kind.value_type, test)
    return any(_holds(kind.field(i).type, test) for i in range(kind.num_fields))


def _csv_ready(table: pa.Table) -> pa.Table:
    """Float columns as text with a decimal point or exponent (Arrow writes 1.0 as ``1``)."""
    for index, item in enumerate(table.schema):
        if pa.types.is_floating(item.type):
            text = pc.cast(table.column(index), pa.string())
            plain = pc.invert(pc.match_substring_regex(text, "[.eEna]"))
            text = pc.if_else(plain, pc.binary_join_element_wise(text, ".0", ""), text)
            table = table.set_column(index, item.name, text)
    return table
