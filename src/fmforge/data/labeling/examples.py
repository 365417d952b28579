"""The labelled examples ``synth`` and ``end-model`` learn from: a file, or a gold column.

A file is JSON Lines (one object a line) or CSV (a header line), each example a ``label`` (a
class name, or a class index into the given labels) and either the text (under the column's
name, or ``text``) or a ``row_id`` of the dataset version (its full id, or a unique prefix of
8 or more characters). A gold column takes every row whose value in it is set (a class name or
index; WRENCH's -1 means none). Every problem is refused in one line naming the file, the line
and the field. The set's digest is the blake3 of its (label, text) pairs, sorted: the same
examples in another order are the same set.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import orjson
import pyarrow as pa

from fmforge.data.userinput import shown
from fmforge.errors import LabelingError

MAX_EXAMPLE_BYTES = 64 << 20
MAX_EXAMPLES = 100_000


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    y: np.ndarray[Any, Any]  # class indices into labels
    labels: tuple[str, ...]
    rows: list[dict[str, Any]]  # the dataset row of each, where it is one, else {column: text}
    positions: list[int]  # each one's row position in the version, -1 where it is not a row
    digest: str
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) of a JSON Lines or CSV file."""
    try:
        if path.is_dir():
            raise LabelingError(f"{path}: is a directory, not an examples file")
        with path.open("rb") as handle:
            data = handle.read(MAX_EXAMPLE_BYTES + 1)
    except OSError as problem:
        raise LabelingError(f"{path}: {problem.strerror or problem}") from None
    if len(data) > MAX_EXAMPLE_BYTES:
        raise LabelingError(f"{path}: larger than {MAX_EXAMPLE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise LabelingError(f"{path}: not UTF-8 text (byte {problem.start})") from None
    records: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for record in reader:
                if None in record:
                    raise LabelingError(
                        f"{path}: line {reader.line_num}: more fields than the header"
                    )
                records.append((reader.line_num, record))
        except csv.Error as problem:
            raise LabelingError(f"{path}: line {reader.line_num}: {problem}") from None
        return records
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as problem:
            raise LabelingError(
                f"{path}: line {number}: not valid JSON ({str(problem).split(':')[0]}); "
                "examples are JSON Lines (or a .csv file)"
            ) from None
        if len(records) > MAX_EXAMPLES:
            raise LabelingError(f"{path}: more than {MAX_EXAMPLES:,} examples")
    return records


def _label_names(raw: Sequence[Any], given: Sequence[str] | None, where: Sequence[str]) -> tuple[
    tuple[str, ...], list[int]
]:  # fmt: skip
    """(class names, each example's class index) from the raw labels."""
    if given:
        labels = tuple(given)
        out = []
        for value, at in zip(raw, where, strict=True):
            if isinstance(value, int) and not isinstance(value, bool):
                if not 0 <= value < len(labels):
                    raise LabelingError(
                        f"{at}: label {value} is not a class index (0..{len(labels) - 1} for "
                        f"{', '.join(labels)})"
                    )
                out.append(value)
            elif str(value) in labels:
                out.append(labels.index(str(value)))
            else:
                raise LabelingError(f"{at}: label {shown(value)} is not one of {', '.join(labels)}")
        return labels, out
    if all(isinstance(v, int) for v in raw):
        labels = tuple(str(i) for i in range(max(raw) + 1))
        return labels, [int(v) for v in raw]
    if any(isinstance(v, int) for v in raw):
        at = next(a for v, a in zip(raw, where, strict=True) if isinstance(v, int))
        raise LabelingError(
            f"{at}: labels mix class names and indices; give names (or --labels to name indices)"
        )
    labels = tuple(sorted({str(v) for v in raw}))
    return labels, [labels.index(str(v)) for v in raw]


def _label(value: Any, at: str) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, float | list | dict):
        raise LabelingError(f"{at}: 'label' must be a class name or index, not {shown(value)}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        raise LabelingError(f"{at}: 'label' is empty")
    return int(text) if text.lstrip("-").isdigit() and text == str(int(text)) else text


def load_examples(
    path: Path | None,
    gold_column: str | None,
    table: pa.Table,
    column: str,
    ref: str,
    labels: Sequence[str] | None = None,
) -> Examples:
    """The examples of ``path`` or of ``gold_column`` over ``table`` (with ``_row_id``)."""
    if path is None and gold_column is None:
        raise LabelingError("give the labelled examples: an examples file or a gold column")
    if path is not None and gold_column is not None:
        raise LabelingError("give an examples file or a gold column, not both")
    texts_column = ["" if v is None else str(v) for v in table.column(column).to_pylist()]
    ids = table.column("_row_id").to_pylist()
    raw: list[Any] = []
    where: list[str] = []
    texts: list[str] = []
    positions: list[int] = []
    if gold_column is not None:
        if gold_column not in table.column_names or gold_column == "_row_id":
            have = ", ".join(c for c in table.column_names if c != "_row_id")
            raise LabelingError(f"{ref} has no column {gold_column!r} (columns: {have})")
        source = f"{ref} column {gold_column}"
        for i, value in enumerate(table.column(gold_column).to_pylist()):
            if value is None or value == "" or (isinstance(value, int) and value < 0):
                continue
            raw.append(_label(value, f"{source}, row {ids[i][:12]}"))
            where.append(f"{source}, row {ids[i][:12]}")
            texts.append(texts_column[i])
            positions.append(i)
    else:
        assert path is not None
        source = str(path)
        first_row = {text: i for i, text in reversed(list(enumerate(texts_column)))}
        for number, record in _read_records(path):
            at = f"{path}: line {number}"
            if not isinstance(record, dict):
                raise LabelingError(f"{at}: expected an object with 'label' and '{column}'")
            if "label" not in record:
                raise LabelingError(f"{at}: no 'label'")
            raw.append(_label(record["label"], at))
            where.append(at)
            text_key = column if column in record else "text" if "text" in record else None
            if text_key is not None:
                text = record[text_key]
                if not isinstance(text, str):
                    raise LabelingError(f"{at}: '{text_key}' must be a string, not {shown(text)}")
                texts.append(text)
                positions.append(first_row.get(text, -1))
            elif "row_id" in record:
                position = _row(record["row_id"], ids, at, ref)
                texts.append(texts_column[position])
                positions.append(position)
            else:
                raise LabelingError(f"{at}: no '{column}' (the example's text) and no 'row_id'")
    if not raw:
        raise LabelingError(f"{source}: no labelled examples")
    names, y = _label_names(raw, labels, where)
    seen: dict[str, tuple[int, str]] = {}
    for text, label, at in zip(texts, y, where, strict=True):
        if text in seen and seen[text][0] != label:
            raise LabelingError(f"{at}: the same text as {seen[text][1]}, with another label")
        seen.setdefault(text, (label, at))
    present = sorted(set(y))
    if len(present) < 2:
        raise LabelingError(
            f"{source}: every example is {names[present[0]]!r}; give examples of two or more "
            "classes"
        )
    rows_table = table.drop_columns(["_row_id"])
    pairs = sorted({(names[label], text) for text, label in zip(texts, y, strict=True)})
    digest = blake3.blake3(orjson.dumps(pairs)).hexdigest()
    # One example per distinct text, in a canonical order: the file's order does not matter.
    order = sorted(range(len(texts)), key=lambda i: (names[y[i]], texts[i]))
    keep, taken = [], set()
    for i in order:
        if texts[i] not in taken:
            taken.add(texts[i])
            keep.append(i)
    rows = [
        rows_table.slice(positions[i], 1).to_pylist()[0] if positions[i] >= 0
        else {column: texts[i]}
        for i in keep
    ]  # fmt: skip
    return Examples(
        [texts[i] for i in keep], np.array([y[i] for i in keep], dtype=np.int64), names, rows,
        [positions[i] for i in keep], digest, source,
    )  # fmt: skip


def _row(value: Any, ids: list[str], at: str, ref: str) -> int:
    if not isinstance(value, str) or len(value) < 8:
        raise LabelingError(f"{at}: 'row_id' must be a row id (8 or more hex digits), not "
                            f"{shown(value)}")  # fmt: skip
    hits = [i for i, row_id in enumerate(ids) if row_id.startswith(value)]
    if len(hits) != 1:
        what = "is not a row" if not hits else f"names {len(hits)} rows"
        raise LabelingError(f"{at}: row id {value!r} {what} of {ref}")
    return hits[0]
