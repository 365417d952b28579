"""What a finetune reads from a dataset version: the train rows with their targets, the gold
eval and test rows, the class names, and a record of exactly which rows were used.

Splits are values of the ``split`` column. Training targets are probability distributions:
the label model's ``weak_label_proba`` when the version has it (rows no labeling function voted
on, whose ``weak_label`` is null, are left out; a manual label, a ``weak_label`` that is not the
model's most probable class, counts as certain), else the gold label of each train row with
one. Class names come from ``--labels``, else from the label model's record (the nearest
``label`` transformation among the version's ancestors) or a WRENCH import's, else from the gold
column's values. A gold value outside the class names is refused, naming it.

Which rows were used is recorded as the version id, the split and the blake3 digest of their
``_row_id``s in training order: the version and the split give the rows back, the digest proves
they are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import pyarrow as pa

from fmforge.data.versions import read_table, resolve
from fmforge.data.views import DatasetsView, DatasetVersion
from fmforge.errors import InvalidSpec
from fmforge.hints import did_you_mean
from fmforge.repository import Repository
from fmforge.training.spec import FinetuneSpec

SOFT_COLUMN = "weak_label_proba"
WEAK_COLUMN = "weak_label"
SPLIT_COLUMN = "split"
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Rows:
    """Rows of one split: their ids and texts, and per row a target distribution (training)
    or a gold class index (evaluation; -1 where none)."""

    split: str | None
    row_ids: tuple[str, ...]
    texts: tuple[str, ...]
    targets: Array | None = None  # (rows, classes) float32, each row summing to 1
    gold: Array | None = None  # (rows,) int64

    def __len__(self) -> int:
        return len(self.row_ids)

    @property
    def ids_digest(self) -> str:
        return blake3.blake3("\n".join(self.row_ids).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What the run's config says about these rows."""
        return {"split": self.split, "rows": len(self), "ids_digest": self.ids_digest}


@dataclass(frozen=True)
class TrainingData:
    version: DatasetVersion
    classes: tuple[str, ...] | None  # None for causal-lm
    soft: bool  # trained on weak_label_proba
    train: Rows
    eval: Rows | None
    test: Rows | None

    def record(self) -> dict[str, Any]:
        return {
            "dataset": self.version.dataset, "ref": self.version.ref, "version": self.version.id,
            "soft_labels": self.soft, "train": self.train.record(),
            "eval": self.eval.record() if self.eval else None,
            "test": self.test.record() if self.test else None,
        }  # fmt: skip


def load_training_data(repo: Repository, spec: FinetuneSpec) -> TrainingData:
    """The rows ``spec`` trains and evaluates on; ``InvalidSpec`` naming what is missing."""
    version = resolve(repo, spec.data)
    table = read_table(repo, version.ref, with_ids=True)
    _require_column(table, spec.text_column, version, "--text-column")
    for name, split in (("--train-split", spec.train_split), ("--eval-split", spec.eval_split),
                        ("--test-split", spec.test_split)):  # fmt: skip
        if split is not None:
            _require_split(table, split, version, name)
    if spec.task == "causal-lm":
        train = _text_rows(table, spec.train_split, spec.text_column)
        if not len(train):
            raise InvalidSpec(f"{version.ref}: no rows to train on")
        return TrainingData(
            version, None, False, train,
            _text_rows(table, spec.eval_split, spec.text_column) if spec.eval_split else None,
            _text_rows(table, spec.test_split, spec.text_column) if spec.test_split else None,
        )  # fmt: skip
    soft = spec.soft_labels and SOFT_COLUMN in table.column_names
    classes = _classes(repo, spec, version, table)
    needs_gold = not soft or spec.eval_split is not None or spec.test_split is not None
    if needs_gold:
        _require_column(table, spec.label_column, version, "--label-column")
    train_table = _split(table, spec.train_split)
    if soft:
        train = _soft_rows(train_table, spec, classes, version)
    else:
        train = _gold_rows(
            train_table, classes, version, label_column=spec.label_column,
            text_column=spec.text_column, split=spec.train_split, one_hot=True,
        )  # fmt: skip
    if not len(train):
        where = f" with split {spec.train_split!r}" if spec.train_split else ""
        what = "a label model's label" if soft else f"a gold {spec.label_column!r}"
        raise InvalidSpec(f"{version.ref}: no rows{where} have {what} to train on")
    evaluated = []
    for split in (spec.eval_split, spec.test_split):
        rows = None
        if split is not None:
            rows = _gold_rows(
                _split(table, split), classes, version, label_column=spec.label_column,
                text_column=spec.text_column, split=split, one_hot=False,
            )  # fmt: skip
            if not len(rows):
                raise InvalidSpec(
                    f"{version.ref}: no rows with split {split!r} have a gold {spec.label_column!r}"
                )
        evaluated.append(rows)
    return TrainingData(version, classes, soft, train, evaluated[0], evaluated[1])


def gold_split(
    repo: Repository,
    target: str,
    split: str | None,
    *,
    task: str,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> tuple[DatasetVersion, Rows]:
    """The rows of ``split`` (all rows for None) with gold labels as ``classes`` indices
    (classification), or their texts (causal-lm): what ``evaluate`` scores."""
    version = resolve(repo, target)
    table = read_table(repo, version.ref, with_ids=True)
    _require_column(table, text_column, version, "--text-column")
    if split is not None:
        _require_split(table, split, version, "split")
    if task == "causal-lm":
        return version, _text_rows(table, split, text_column)
    _require_column(table, label_column, version, "--label-column")
    if classes is None:
        raise InvalidSpec("classification needs the model's class names")
    rows = _gold_rows(
        _split(table, split), tuple(classes), version, label_column=label_column,
        text_column=text_column, split=split, one_hot=False,
    )  # fmt: skip
    return version, rows


# ---- class names -----------------------------------------------------------------------------


def _classes(
    repo: Repository, spec: FinetuneSpec, version: DatasetVersion, table: pa.Table
) -> tuple[str, ...]:
    if spec.labels is not None:
        return spec.labels
    recorded = _recorded_classes(repo, version)
    if recorded is not None:
        return recorded
    if spec.label_column not in table.column_names:
        raise InvalidSpec(
            f"{version.ref}: no class names recorded and no {spec.label_column!r} column; "
            "give --labels"
        )
    values = [v for v in table.column(spec.label_column).to_pylist() if v is not None]
    if all(isinstance(v, str) for v in values):
        names = tuple(sorted(set(values)))
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        top = max((v for v in values if v >= 0), default=-1)
        names = tuple(str(i) for i in range(top + 1))
    else:
        raise InvalidSpec(f"{version.ref}: column {spec.label_column!r} mixes types; give --labels")
    if len(names) < 2:
        raise InvalidSpec(
            f"{version.ref}: column {spec.label_column!r} holds {len(names)} class(es); "
            "classification needs two or more (or give --labels)"
        )
    return names


def _recorded_classes(repo: Repository, version: DatasetVersion) -> tuple[str, ...] | None:
    """Class names a label model or a WRENCH import recorded on this version or an ancestor."""
    by_id = {v.id: v for v in repo.view(DatasetsView).versions(version.dataset)}
    queue, seen = [version], set()
    while queue:
        current = queue.pop(0)
        if current.id in seen:
            continue
        seen.add(current.id)
        t = current.transformation
        if t.get("kind") == "label" and isinstance(t.get("labels"), list):
            return tuple(str(n) for n in t["labels"])
        if t.get("kind") == "import-wrench" and isinstance(t.get("classes"), dict) and t["classes"]:
            classes = t["classes"]
            return tuple(str(classes[k]) for k in sorted(classes, key=int))
        queue.extend(by_id[p] for p in current.parents if p in by_id)
    return None


# ---- rows ------------------------------------------------------------------------------------


def _soft_rows(
    table: pa.Table, spec: FinetuneSpec, classes: tuple[str, ...], version: DatasetVersion
) -> Rows:
    proba = table.column(SOFT_COLUMN).to_pylist()
    weak = table.column(WEAK_COLUMN).to_pylist() if WEAK_COLUMN in table.column_names else None
    keep, targets = [], []
    for i, p in enumerate(proba):
        if p is None or (weak is not None and weak[i] is None):
            continue  # no labeling function voted: the model's prior teaches nothing
        if len(p) != len(classes):
            raise InvalidSpec(
                f"{version.ref}: {SOFT_COLUMN} has {len(p)} probabilities per row, but the "
                f"classes are {', '.join(classes)}"
            )
        target = np.asarray(p, dtype=np.float64)
        label = weak[i] if weak is not None else None
        if label is not None:
            if label not in classes:
                raise InvalidSpec(
                    f"{version.ref}: {WEAK_COLUMN} holds {label!r}, which is not among the "
                    f"classes {', '.join(classes)}"
                )
            if classes.index(label) != int(np.argmax(target)):  # a manual label: certain
                target = np.eye(len(classes))[classes.index(label)]
        total = target.sum()
        if not np.isfinite(total) or total <= 0 or (target < 0).any():
            raise InvalidSpec(f"{version.ref}: row {i} of {SOFT_COLUMN} is not a distribution")
        keep.append(i)
        targets.append(target / total)
    ids, texts = _ids_texts(table, keep, spec.text_column)
    array = np.asarray(targets, dtype=np.float32).reshape(len(keep), len(classes))
    return Rows(spec.train_split, ids, texts, targets=array)


def _gold_rows(
    table: pa.Table,
    classes: tuple[str, ...],
    version: DatasetVersion,
    *,
    label_column: str,
    text_column: str,
    split: str | None,
    one_hot: bool,
) -> Rows:
    keep, gold = [], []
    for i, value in enumerate(table.column(label_column).to_pylist()):
        index = _class_index(value, classes, version, label_column)
        if index >= 0:
            keep.append(i)
            gold.append(index)
    ids, texts = _ids_texts(table, keep, text_column)
    labels = np.asarray(gold, dtype=np.int64)
    if one_hot:
        targets = np.eye(len(classes), dtype=np.float32)[labels].reshape(len(keep), len(classes))
        return Rows(split, ids, texts, targets=targets)
    return Rows(split, ids, texts, gold=labels)


def _class_index(value: Any, classes: tuple[str, ...], version: DatasetVersion, column: str) -> int:
    if value is None:
        return -1
    if isinstance(value, str):
        if value in classes:
            return classes.index(value)
        hint = did_you_mean(value, list(classes))
        raise InvalidSpec(
            f"{version.ref}: column {column!r} holds {value!r}, which is not among the classes "
            f"{', '.join(classes)}{hint}"
        )
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidSpec(f"{version.ref}: column {column!r} holds {value!r}, not a class")
    index = int(value)
    if index == -1:
        return -1
    if not 0 <= index < len(classes):
        raise InvalidSpec(
            f"{version.ref}: column {column!r} holds class index {index}, but there are "
            f"{len(classes)} classes ({', '.join(classes)})"
        )
    return index


def _text_rows(table: pa.Table, split: str | None, text_column: str) -> Rows:
    part = _split(table, split)
    keep = [i for i, t in enumerate(part.column(text_column).to_pylist()) if t]
    ids, texts = _ids_texts(part, keep, text_column)
    return Rows(split, ids, texts)


def _ids_texts(table: pa.Table, keep: list[int], text_column: str) -> tuple[tuple[str, ...], ...]:
    ids = table.column("_row_id").to_pylist()
    texts = table.column(text_column).to_pylist()
    return tuple(str(ids[i]) for i in keep), tuple(str(texts[i] or "") for i in keep)


def _split(table: pa.Table, split: str | None) -> pa.Table:
    if split is None:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column(SPLIT_COLUMN).cast(pa.string()), split))


def _require_column(table: pa.Table, column: str, version: DatasetVersion, option: str) -> None:
    if column not in table.column_names:
        visible = [c for c in table.column_names if c != "_row_id"]
        raise InvalidSpec(
            f"{option}: {version.ref} has no column {column!r}{did_you_mean(column, visible)} "
            f"(columns: {', '.join(visible)})"
        )


def _require_split(table: pa.Table, split: str, version: DatasetVersion, option: str) -> None:
    if SPLIT_COLUMN not in table.column_names:
        raise InvalidSpec(f"{option} {split}: {version.ref} has no {SPLIT_COLUMN!r} column")
    present = sorted({str(s) for s in table.column(SPLIT_COLUMN).to_pylist() if s is not None})
    if split not in present:
        raise InvalidSpec(
            f"{option} {split}: {version.ref} has no such split{did_you_mean(split, present)} "
            f"(splits: {', '.join(present)})"
        )
