"""The end model: a classifier over every row, trained on the weak labels plus the examples.

``end_model(repo, spec)`` reads a labelled version (``weak_label`` from ``label model``),
embeds its texts with MiniLM through the embedding cache, and fits a logistic regression on
every row that has a weak label, each weighted by the label model's confidence in it
(``(p_max - 1/k) / (1 - 1/k)`` from ``weak_label_proba``), plus the labelled examples, which
together weigh as much as all the weak rows. Beside it, the baseline the weak labels must beat:
the same classifier on the examples alone. Both are scored by 5-fold cross-validation on the
examples (the end model keeps every weak row in each fold's training set and never sees the
held-out examples), and on gold rows of the version when asked. The predictions are committed
as a new version (``end_label``, ``end_label_proba``) recording both scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.labeling.embedcache import EmbeddingCache
from fmforge.data.labeling.examples import load_examples
from fmforge.data.labeling.selection import folds
from fmforge.data.userinput import SpecProblem, validate_fields
from fmforge.data.versions import AddResult, commit_table, read_table, resolve
from fmforge.errors import LabelingError
from fmforge.repository import Repository

Array = np.ndarray[Any, Any]
EXAMPLE_SHARE = 1.0  # the examples' total weight, as a share of the weak rows'
_Name = Annotated[str, Field(min_length=1, max_length=200)]


def fit_classifier(
    features: Array, y: Array, k: int, weight: Array | None = None, seed: int = 0
) -> Any:
    """A multinomial logistic regression (lbfgs, C=1) over unit-length embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(features, y, sample_weight=weight)
    return model


def predict(model: Any, features: Array, k: int) -> Array:
    """Class probabilities (rows x k), columns for classes the model never saw left at 0."""
    proba = np.zeros((features.shape[0], k))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba


def confidence(proba: Array) -> Array:
    """Per row, how far the label model's top probability is above a uniform guess, 0..1."""
    k = proba.shape[1]
    return np.asarray(np.clip((proba.max(axis=1) - 1 / k) / (1 - 1 / k), 0.0, 1.0))


def train_end_model(
    rows: Array,
    weak: Array,
    examples: Array,
    y: Array,
    k: int,
    seed: int = 0,
    weight: Array | None = None,
) -> Any:
    """The end model: rows with a weak label (``weak`` >= 0), weighted by ``weight`` (the
    label model's confidence; 1 when not given), plus the examples, which weigh
    ``EXAMPLE_SHARE`` of the weak rows together (at least 1 each)."""
    keep = weak >= 0
    row_weight = (np.ones(len(weak)) if weight is None else np.asarray(weight, float))[keep]
    each = max(1.0, EXAMPLE_SHARE * float(row_weight.sum()) / max(len(y), 1))
    features = np.vstack([rows[keep], examples])
    labels = np.concatenate([weak[keep], y])
    weights = np.concatenate([row_weight, np.full(len(y), each)])
    return fit_classifier(features, labels, k, weights, seed)


def cross_validated(
    rows: Array | None,
    weak: Array | None,
    examples: Array,
    y: Array,
    k: int,
    seed: int = 0,
    weight: Array | None = None,
) -> float:
    """5-fold accuracy on the examples: the end model (``rows``/``weak`` given) or the
    baseline on the examples alone (None)."""
    right = 0
    for train, held in folds(y, seed):
        if rows is None or weak is None:
            if len(set(y[train].tolist())) < 2:
                continue
            model = fit_classifier(examples[train], y[train], k, seed=seed)
        else:
            model = train_end_model(rows, weak, examples[train], y[train], k, seed, weight)
        right += int(np.sum(predict(model, examples[held], k).argmax(axis=1) == y[held]))
    return right / len(y)


class EndModelSpec(BaseModel):
    """``end_model``'s input: a labelled version, the examples, and what to score on."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    target: _Name = Field(description="a labelled dataset version, NAME[@REF]")
    examples: Path | None = Field(default=None, description="a JSON Lines or CSV file of examples")
    gold_column: _Name | None = Field(default=None, description="a column name")
    column: _Name = Field(default="text", description="the text column's name")
    weak_column: _Name = Field(default="weak_label", description="the weak label column's name")
    eval_column: _Name | None = Field(default=None, description="a gold column to score on")
    eval_split: _Name | None = Field(default=None, description="a value of the split column")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="an integer from 0 to 2**32 - 1")

    @classmethod
    def parse(cls, **fields: Any) -> EndModelSpec:
        try:
            spec: EndModelSpec = validate_fields(cls, fields)
        except SpecProblem as problem:
            raise LabelingError(f"end-model: {problem}") from None
        return spec


@dataclass(frozen=True)
class EndModelResult:
    version: AddResult
    labels: tuple[str, ...]
    weak_rows: int
    examples: int
    cv_accuracy: float  # 5-fold on the examples
    baseline_cv_accuracy: float  # the classifier on the examples alone
    eval_rows: int
    eval_accuracy: float | None
    baseline_eval_accuracy: float | None

    @property
    def beats_baseline(self) -> bool:
        if self.eval_accuracy is not None and self.baseline_eval_accuracy is not None:
            return self.eval_accuracy > self.baseline_eval_accuracy
        return self.cv_accuracy > self.baseline_cv_accuracy


@mediated("label", lambda repo, args: targets.dataset_resource(repo, args["spec"].target))
def end_model(repo: Repository, spec: EndModelSpec) -> EndModelResult:
    """Train the end model on ``spec.target`` and commit its predictions (see the module)."""
    version = resolve(repo, spec.target)
    table = read_table(repo, version.ref, with_ids=True)
    have = [c for c in table.column_names if c != "_row_id"]
    for column in (spec.column, spec.weak_column, spec.eval_column):
        if column is not None and column not in have:
            hint = " (run `fmforge label model` first)" if column == spec.weak_column else ""
            raise LabelingError(
                f"{version.ref} has no column {column!r}{hint} (columns: {', '.join(have)})"
            )
    examples = load_examples(spec.examples, spec.gold_column, table, spec.column, version.ref)
    labels, k = examples.labels, len(examples.labels)
    weak_names = table.column(spec.weak_column).to_pylist()
    strangers = sorted({str(w) for w in weak_names if w is not None and str(w) not in labels})
    if strangers:
        raise LabelingError(
            f"{version.ref}: {spec.weak_column} holds {strangers[0]!r}, which the examples' "
            f"labels ({', '.join(labels)}) do not have"
        )
    weak = np.array([-1 if w is None else labels.index(str(w)) for w in weak_names])
    if not (weak >= 0).any():
        raise LabelingError(f"{version.ref}: no row has a {spec.weak_column}")
    weight = _confidence(table, spec.weak_column, k)
    texts = ["" if t is None else str(t) for t in table.column(spec.column).to_pylist()]
    cache = EmbeddingCache(repo, version)
    features = cache(texts, f"column {spec.column}")
    example_features = cache(examples.texts, "examples")
    model = train_end_model(features, weak, example_features, examples.y, k, spec.seed, weight)
    baseline = fit_classifier(example_features, examples.y, k, seed=spec.seed)
    cv = cross_validated(features, weak, example_features, examples.y, k, spec.seed, weight)
    baseline_cv = cross_validated(None, None, example_features, examples.y, k, spec.seed)
    proba = predict(model, features, k)
    evaluated, ours, theirs = _evaluate(spec, table, examples.positions, labels, features,
                                        model, baseline, k)  # fmt: skip
    for column in ("end_label", "end_label_proba"):
        if column in table.column_names:
            table = table.drop_columns([column])
    ids = table.column("_row_id").to_pylist()
    table = table.drop_columns(["_row_id"])
    table = table.append_column("end_label", pa.array([labels[i] for i in proba.argmax(1)]))
    table = table.append_column(
        "end_label_proba", pa.array(np.round(proba, 6).tolist(), pa.list_(pa.float64()))
    )
    scores = {"cv_accuracy": cv, "baseline_cv_accuracy": baseline_cv}
    if ours is not None and theirs is not None:
        scores |= {"eval_accuracy": ours, "baseline_eval_accuracy": theirs}
    added = commit_table(
        repo, version.dataset, table, ids,
        transformation={
            "kind": "end-model", "source": version.id, "model": "logistic regression on "
            f"MiniLM embeddings ({cache.model})", "weak_column": spec.weak_column,
            "examples": examples.digest, "labels": list(labels), "scores": scores,
            "weak_rows": int((weak >= 0).sum()), "seed": spec.seed,
        },
        message=f"end model on {int((weak >= 0).sum())} weak labels + {len(examples)} examples",
        parents=(version.id,), allow_schema_change=True,
    )  # fmt: skip
    return EndModelResult(added, labels, int((weak >= 0).sum()), len(examples), cv,
                          baseline_cv, evaluated, ours, theirs)  # fmt: skip


def _confidence(table: pa.Table, weak_column: str, k: int) -> Array | None:
    """The label model's confidence per row, from ``<weak_column>_proba`` when it is there."""
    column = f"{weak_column}_proba"
    if column not in table.column_names:
        return None
    values = table.column(column).to_pylist()
    out = np.ones(len(values))
    for i, proba in enumerate(values):
        if isinstance(proba, list) and len(proba) == k:
            out[i] = confidence(np.array([proba], float))[0]
    return out


def _evaluate(
    spec: EndModelSpec, table: pa.Table, example_rows: list[int], labels: tuple[str, ...],
    features: Array, model: Any, baseline: Any, k: int,
) -> tuple[int, float | None, float | None]:  # fmt: skip
    """(rows, end model accuracy, baseline accuracy) on the gold rows of ``eval_column``
    (those of ``eval_split`` when given), the examples left out."""
    if spec.eval_column is None:
        return 0, None, None
    gold = np.full(table.num_rows, -1)
    for i, value in enumerate(table.column(spec.eval_column).to_pylist()):
        if isinstance(value, str) and value in labels:
            gold[i] = labels.index(value)
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < k:
            gold[i] = value
    use = gold >= 0
    use[[p for p in example_rows if p >= 0]] = False
    if spec.eval_split is not None:
        if "split" not in table.column_names:
            raise LabelingError("--eval-split needs a split column, which the version lacks")
        use &= np.array([s == spec.eval_split for s in table.column("split").to_pylist()])
    if not use.any():
        raise LabelingError(f"no gold rows to score on in {spec.eval_column}")
    ours = float(np.mean(predict(model, features[use], k).argmax(1) == gold[use]))
    theirs = float(np.mean(predict(baseline, features[use], k).argmax(1) == gold[use]))
    return int(use.sum()), ours, theirs
