"""WRENCH benchmark datasets (JSON per split, ``weak_labels`` per row) as dataset versions.

A WRENCH folder holds ``train.json``, ``valid.json`` and ``test.json`` (any may be missing),
each ``{"<id>": {"label": int, "weak_labels": [int, ...], "data": {"text": ..., ...}}}``, and
``label.json`` naming the classes. Imported, it is one table: ``split``, ``wrench_id``, the
``data`` fields as columns, ``label`` (gold; -1 where there is none) and ``weak_labels`` (the
label matrix row, -1 = abstain), so a stored matrix can be used as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fmforge.data.storage import row_ids
from fmforge.data.versions import AddResult, commit_table, read_table
from fmforge.errors import InvalidDataSource
from fmforge.repository import Repository

SPLITS = ("train", "valid", "test")


def read_wrench(directory: Path) -> tuple[pa.Table, dict[str, str]]:
    """(table, class names) of a WRENCH folder."""
    if not directory.is_dir():
        raise InvalidDataSource(f"{directory}: not a folder")
    records: list[dict[str, Any]] = []
    width = None
    for split in SPLITS:
        path = directory / f"{split}.json"
        if not path.exists():
            continue
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InvalidDataSource(f"{path}: line {error.lineno}: malformed JSON") from None
        for key, row in rows.items():
            try:
                weak, data = [int(v) for v in row["weak_labels"]], dict(row["data"])
            except (KeyError, TypeError, ValueError):
                raise InvalidDataSource(
                    f"{path}: row {key!r} needs weak_labels (ints) and data (an object)"
                ) from None
            width = len(weak) if width is None else width
            if len(weak) != width:
                raise InvalidDataSource(
                    f"{path}: row {key!r} has {len(weak)} weak labels, earlier rows {width}"
                )
            label = row.get("label")
            records.append(
                {"split": split, "wrench_id": str(key), **data,
                 "label": -1 if label is None else int(label), "weak_labels": weak}
            )  # fmt: skip
    if not records:
        raise InvalidDataSource(f"{directory}: no train.json, valid.json or test.json")
    names_path = directory / "label.json"
    names = json.loads(names_path.read_text()) if names_path.exists() else {}
    table = pa.Table.from_pylist(records)
    return table.set_column(
        table.schema.get_field_index("weak_labels"), "weak_labels",
        table.column("weak_labels").cast(pa.list_(pa.int8())),
    ), {str(k): str(v) for k, v in names.items()}  # fmt: skip


def import_wrench(repo: Repository, directory: Path, name: str) -> AddResult:
    """Record a WRENCH folder as the next version of dataset ``name``."""
    table, classes = read_wrench(directory)
    return commit_table(
        repo, name, table, row_ids(table),
        transformation={"kind": "import-wrench", "source": str(directory), "classes": classes,
                        "lfs": len(table.column("weak_labels")[0])},
        message=f"import WRENCH {directory.name}",
    )  # fmt: skip


def label_matrix(
    repo: Repository, target: str, *, split: str | None = None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(L, gold labels) of a version with a ``weak_labels`` column, optionally one split."""
    table = read_table(repo, target)
    if "weak_labels" not in table.column_names:
        raise InvalidDataSource(f"{target} has no weak_labels column")
    if split is not None:
        table = table.filter(pa.compute.equal(table.column("split"), split))
    L = np.array(table.column("weak_labels").to_pylist(), dtype=np.int64)
    y = np.asarray(table.column("label").to_numpy(), dtype=np.int64)
    return L.reshape(table.num_rows, -1), y
