"""From labeling functions to a labelled dataset version: analysis, the label model, active
learning and manual labels.

Gold labels come from a column (``label`` by default; class names or indices), on the dev split
(rows whose ``split`` is ``valid`` or ``dev`` when there is a split column, else every row with a
gold label), plus the manual labels recorded with ``set_label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import ManualLabelSet
from fmforge.data.labeling.analysis import LFSummary
from fmforge.data.labeling.functions import LabelMatrix
from fmforge.data.labeling.model import LabelModel
from fmforge.data.versions import STREAM_PREFIX, AddResult, commit_table, read_table, resolve
from fmforge.data.views import DatasetWork
from fmforge.errors import LabelingError
from fmforge.repository import Repository

DEV_SPLITS = ("valid", "dev", "validation")


@dataclass(frozen=True)
class Gold:
    """Where gold labels are: a column, on the rows whose ``split`` is one of ``dev_splits``."""

    column: str = "label"
    dev_splits: tuple[str, ...] = DEV_SPLITS


def gold_rows(
    repo: Repository, matrix: LabelMatrix, spec: Gold = Gold()
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(dev row mask, class per row; -1 where unknown), from the gold column and manual labels."""
    column, dev_splits = spec.column, spec.dev_splits
    table = read_table(repo, matrix.version.ref)
    n = table.num_rows
    classes = np.full(n, -1)
    if column in table.column_names:
        for i, value in enumerate(table.column(column).to_pylist()):
            classes[i] = _class_of(value, matrix.labels)
    manual = manual_labels(repo, matrix.version.dataset)
    position = {row_id: i for i, row_id in enumerate(matrix.row_ids)}
    for row_id, label in manual.items():
        if row_id in position:
            classes[position[row_id]] = matrix.labels.index(label)
    dev = classes >= 0
    if "split" in table.column_names:
        splits = np.array([str(s) for s in table.column("split").to_pylist()])
        manual_rows = np.zeros(n, dtype=bool)
        manual_rows[[position[r] for r in manual if r in position]] = True
        dev &= np.isin(splits, dev_splits) | manual_rows
    return dev, classes


def _class_of(value: Any, labels: tuple[str, ...]) -> int:
    if value is None:
        return -1
    if isinstance(value, str):
        return labels.index(value) if value in labels else -1
    index = int(value)
    return index if 0 <= index < len(labels) else -1


@dataclass
class LFReport:
    name: str
    kind: str
    version: str
    coverage: float
    overlap: float
    conflict: float
    polarity: list[str]
    accuracy: float | None  # on the gold dev rows it voted on
    weight: float | None  # the label model's log-odds for its votes, when it learns one
    fires: list[str]  # examples of rows it votes on
    conflicts: list[str]  # examples of rows where it disagrees with another LF


@mediated("read", lambda repo, args: targets.dataset_resource(repo, args["matrix"].version.ref))
def analyze(
    repo: Repository, matrix: LabelMatrix, *, gold: Gold = Gold(), text: str = "text"
) -> tuple[list[LFReport], list[str]]:
    """Per-LF figures and warnings: near-duplicate LFs, LFs worse than chance on gold."""
    dev, classes = gold_rows(repo, matrix, gold)
    lf_votes = matrix.matrix
    k = len(matrix.labels)
    on_dev = LFSummary(lf_votes[dev], k, gold=classes[dev]).stats() if dev.any() else None
    summary = LFSummary(lf_votes, k).stats()
    table = read_table(repo, matrix.version.ref)
    texts = [str(v) for v in table.column(text).to_pylist()] if text in table.column_names else []
    model = LabelModel(models=["weighted"], cardinality=k)
    weights = None
    if dev.any():
        model.fit(lf_votes, L_dev=lf_votes[dev], y_dev=classes[dev])
        fitted = model._fitted
        weights = fitted.weights if fitted is not None else None
    reports = []
    votes = (lf_votes >= 0).sum(axis=1)
    for j, stats in enumerate(summary):
        fired = np.flatnonzero(lf_votes[:, j] >= 0)
        disputed = [i for i in fired if votes[i] > np.sum(lf_votes[i] == lf_votes[i, j])]
        reports.append(
            LFReport(
                matrix.lfs[j]["name"], matrix.lfs[j]["kind"], matrix.lfs[j]["version"],
                stats.coverage, stats.overlap, stats.conflict,
                [matrix.labels[c] for c in stats.polarity],
                on_dev[j].accuracy if on_dev else None,
                float(weights[j]) if weights is not None else None,
                [texts[i][:80] for i in fired[:3]] if texts else [],
                [texts[i][:80] for i in disputed[:3]] if texts else [],
            )
        )  # fmt: skip
    return reports, _warnings(lf_votes, reports, k)


def _warnings(lf_votes: np.ndarray[Any, Any], reports: list[LFReport], k: int) -> list[str]:
    out = []
    for report in reports:
        if report.accuracy is not None and report.accuracy < 1 / k:
            out.append(f"{report.name} is worse than chance on gold ({report.accuracy:.2f})")
        if report.coverage == 0:
            out.append(f"{report.name} never votes")
    for a in range(lf_votes.shape[1]):
        for b in range(a + 1, lf_votes.shape[1]):
            both = (lf_votes[:, a] >= 0) | (lf_votes[:, b] >= 0)
            if both.sum() and np.mean(lf_votes[both, a] == lf_votes[both, b]) >= 0.95:
                out.append(
                    f"{reports[a].name} and {reports[b].name} are near duplicates "
                    f"({np.mean(lf_votes[both, a] == lf_votes[both, b]):.0%} of their votes agree)"
                )
    return out


def fit_label_model(
    repo: Repository, matrix: LabelMatrix, *, gold: Gold = Gold(), metric: str = "accuracy"
) -> tuple[LabelModel, np.ndarray[Any, Any]]:
    """The label model fitted on the non-dev rows (all rows when that leaves none), chosen on
    the gold dev rows; returns it and its probabilities for every row."""
    dev, classes = gold_rows(repo, matrix, gold)
    lf_votes = matrix.matrix
    train = lf_votes[~dev] if (~dev).sum() >= 10 else lf_votes
    model = LabelModel(cardinality=len(matrix.labels), metric=metric)
    if dev.any():
        model.fit(train, L_dev=lf_votes[dev], y_dev=classes[dev])
    else:
        model.fit(train)
    return model, model.predict_proba(lf_votes)


@mediated("label", lambda repo, args: targets.dataset_resource(repo, args["matrix"].version.ref))
def label_version(
    repo: Repository, matrix: LabelMatrix, *, gold: Gold = Gold(), metric: str = "accuracy"
) -> tuple[LabelModel, AddResult]:
    """Commit the dataset with probabilistic labels (``weak_label``, ``weak_label_proba``):
    the LF versions and the label model go on the record. Rows no LF votes on keep a null label;
    manual labels win over the model's."""
    model, proba = fit_label_model(repo, matrix, gold=gold, metric=metric)
    table = read_table(repo, matrix.version.ref)
    covered = np.asarray((matrix.matrix >= 0).any(axis=1))
    predicted = np.argmax(proba, axis=1)
    manual = manual_labels(repo, matrix.version.dataset)
    names: list[str | None] = []
    for i, row_id in enumerate(matrix.row_ids):
        if row_id in manual:
            names.append(manual[row_id])
        else:
            names.append(matrix.labels[predicted[i]] if covered[i] else None)
    for column in ("weak_label", "weak_label_proba"):
        if column in table.column_names:
            table = table.drop_columns([column])
    table = table.append_column("weak_label", pa.array(names, pa.string()))
    table = table.append_column(
        "weak_label_proba", pa.array(np.round(proba, 6).tolist(), pa.list_(pa.float64()))
    )
    # The rows are the same source records with labels added: they keep their ids.
    result = commit_table(
        repo, matrix.version.dataset, table, matrix.row_ids,
        transformation={
            "kind": "label", "source": matrix.version.id, "lfs": matrix.lfs,
            "labels": list(matrix.labels), "model": model.chosen, "prior": model.chosen_prior,
            "dev_scores": model.scores, "manual_labels": len(manual),
        },
        message=f"label with {len(matrix.lfs)} LFs ({model.chosen})",
        parents=(matrix.version.id,), allow_schema_change=True,
    )  # fmt: skip
    return model, result


@mediated("read", lambda repo, args: targets.dataset_resource(repo, args["matrix"].version.ref))
def suggest(
    repo: Repository, matrix: LabelMatrix, n: int = 20, *, gold: Gold = Gold()
) -> list[tuple[str, str, float]]:
    """Rows worth labelling by hand, most useful first: no LF votes on them, then LFs disagree
    most, then the label model is least sure. (row id, reason, score)."""
    _, proba = fit_label_model(repo, matrix, gold=gold)
    lf_votes = matrix.matrix
    manual = manual_labels(repo, matrix.version.dataset)
    votes = (lf_votes >= 0).sum(axis=1)
    agreeing = np.max(
        np.stack([(lf_votes == c).sum(axis=1) for c in range(len(matrix.labels))]), axis=0
    )
    conflict = np.where(votes > 0, 1 - agreeing / np.maximum(votes, 1), 0.0)
    confidence = proba.max(axis=1)
    ranked = []
    for i, row_id in enumerate(matrix.row_ids):
        if row_id in manual:
            continue
        if votes[i] == 0:
            ranked.append((0, 0.0, row_id, "no LF votes on it", 0.0))
        elif conflict[i] > 0:
            ranked.append((1, -conflict[i], row_id, "LFs disagree", float(conflict[i])))
        else:
            ranked.append((2, confidence[i], row_id, "low confidence", float(confidence[i])))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [(r[2], r[3], r[4]) for r in ranked[:n]]


@mediated("label", targets.dataset())
def set_label(repo: Repository, target: str, row: str, label: str, labels: list[str]) -> str:
    """Record a manual label for the row whose id starts with ``row``; returns the full id."""
    if label not in labels:
        raise LabelingError(f"{label!r} is not one of the labels {labels}")
    version = resolve(repo, target)
    ids = read_table(repo, version.ref, with_ids=True).column("_row_id").to_pylist()
    hits = [i for i in ids if i.startswith(row)]
    if len(hits) != 1:
        raise LabelingError(
            f"{row!r} names {len(hits)} rows of {version.ref}; give a longer row id"
        )
    repo.record(
        STREAM_PREFIX + version.dataset,
        ManualLabelSet({"row_id": hits[0], "label": label,
                        "labeler": repo.principal, "version": version.id}),
    )  # fmt: skip
    return str(hits[0])


def manual_labels(repo: Repository, dataset: str) -> dict[str, str]:
    """row id -> the label last set by hand."""
    return repo.view(DatasetWork).manual_labels(dataset)
