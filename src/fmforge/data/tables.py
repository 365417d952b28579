"""Reading versions: filters and queries over a version (DuckDB, checked by
:mod:`fmforge.data.filters`), diffs between versions, export to files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fmforge.data.filters import run_query, select
from fmforge.data.storage import ROW_ID
from fmforge.data.versions import read_table, resolve
from fmforge.errors import DataError, InvalidDataSource
from fmforge.repository import Repository


def query(repo: Repository, target: str, sql: str) -> pa.Table:
    """Run ``sql``, one ``SELECT`` reading only the version ``target`` as the table ``data``
    (with its ``_row_id`` column), e.g. ``SELECT label, count(*) FROM data GROUP BY label``.
    Anything else (another statement, a file, a table function) is refused: see
    :mod:`fmforge.data.filters`."""
    return run_query(read_table(repo, target, with_ids=True), sql, source=f"query on {target}")


def where(repo: Repository, target: str, condition: str, *, source: str = "--where") -> pa.Table:
    """The rows of ``target`` (with ``_row_id``) for which the filter ``condition``, one SQL
    expression over its columns, holds (:mod:`fmforge.data.filters` gives the grammar)."""
    table = read_table(repo, target, with_ids=True)
    return select(table, condition, source=source, relation=target)


@dataclass
class DatasetDiff:
    old: str  # NAME@vN
    new: str
    added: int
    removed: int
    unchanged: int
    changed: int = 0  # with a key: rows whose key is in both with other values
    key: str | None = None
    changed_by_column: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def diff_datasets(
    repo: Repository, old: str, new: str, *, key: str | None = None, examples: int = 3
) -> DatasetDiff:
    """Rows added, removed and unchanged between two versions (by row id). With ``key`` (a
    column identifying a record), a removed and an added row with the same key count as one
    changed row, and the columns whose values changed are counted."""
    a_version = resolve(repo, old)
    b_version = resolve(repo, new if "@" in new else f"{a_version.dataset}@{new}")
    a = read_table(repo, a_version.ref, with_ids=True)
    b = read_table(repo, b_version.ref, with_ids=True)
    a_ids, b_ids = a.column(ROW_ID).to_pylist(), b.column(ROW_ID).to_pylist()
    a_set, b_set = set(a_ids), set(b_ids)
    removed_rows = [i for i, r in enumerate(a_ids) if r not in b_set]
    added_rows = [i for i, r in enumerate(b_ids) if r not in a_set]
    a_columns = [c for c in a.column_names if c != ROW_ID]
    b_columns = [c for c in b.column_names if c != ROW_ID]
    report = DatasetDiff(
        a_version.ref, b_version.ref, len(added_rows), len(removed_rows),
        len(a_set & b_set), key=key,
        columns_added=[c for c in b_columns if c not in a_columns],
        columns_removed=[c for c in a_columns if c not in b_columns],
    )  # fmt: skip
    old_rows = a.take(pa.array(removed_rows, pa.int64())).drop_columns([ROW_ID]).to_pylist()
    new_rows = b.take(pa.array(added_rows, pa.int64())).drop_columns([ROW_ID]).to_pylist()
    if key is not None:
        for table, name in ((a, a_version.ref), (b, b_version.ref)):
            if key not in table.column_names:
                raise DataError(f"{name} has no column {key!r} to use as the diff key")
        before = {row[key]: row for row in old_rows}
        changed = []
        for row in new_rows:
            previous = before.pop(row[key], None)
            if previous is not None:
                columns = [c for c in b_columns if c in previous and previous[c] != row[c]]
                for column in columns:
                    report.changed_by_column[column] = report.changed_by_column.get(column, 0) + 1
                changed.append({key: row[key], **{c: [previous[c], row[c]] for c in columns}})
        changed_keys = {c[key] for c in changed}
        new_rows = [r for r in new_rows if r[key] not in changed_keys]
        old_rows = list(before.values())
        report.changed = len(changed)
        report.added, report.removed = len(new_rows), len(old_rows)
        report.examples["changed"] = changed[:examples]
    report.examples["added"] = new_rows[:examples]
    report.examples["removed"] = old_rows[:examples]
    return report


def export_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` as CSV, JSON Lines or Parquet, chosen by ``path``'s extension."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(table, path, compression="zstd")
    elif suffix == ".csv":
        pacsv.write_csv(table, path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("wb") as out:
            for row in table.to_pylist():
                out.write(orjson.dumps(row) + b"\n")
    else:
        raise InvalidDataSource(f"{path}: export to .csv, .jsonl or .parquet, not {suffix!r}")
