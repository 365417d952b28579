"""Label models on label matrices with known truth, and the errors bad input gets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fmforge.data.labeling import MODELS, LabelModel, LabelModelError

Array = np.ndarray[Any, Any]


def planted(n: int, accuracies: list[float], coverage: float, k: int = 2, seed: int = 0,
            balance: float | None = None) -> tuple[Array, Array]:  # fmt: skip
    """Conditionally independent LFs of known accuracy, each voting on ``coverage`` of rows."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < balance).astype(int) if balance else rng.integers(0, k, n)
    L = np.full((n, len(accuracies)), -1)
    for j, accuracy in enumerate(accuracies):
        fire = rng.random(n) < coverage
        right = rng.random(n) < accuracy
        wrong = (y + rng.integers(1, k, n)) % k
        L[fire, j] = np.where(right, y, wrong)[fire]
    return L, y


@pytest.mark.parametrize("model", [m for m in MODELS if m != "dev_naive_bayes"])
def test_every_model_beats_majority_vote_with_uneven_lfs(model: str) -> None:
    # Two good LFs and three near-random ones: counting votes equally is the wrong thing.
    L, y = planted(20_000, [0.95, 0.9, 0.55, 0.55, 0.55], coverage=0.7)
    majority = LabelModel(models=["majority"]).fit(L).predict(L)
    fitted = LabelModel(models=[model]).fit(L)
    accuracy = np.mean(fitted.predict(L) == y)
    assert accuracy >= np.mean(majority == y) - 0.005
    if model != "majority":
        assert accuracy > np.mean(majority == y) + 0.02, (model, accuracy)
    proba = fitted.predict_proba(L)
    assert proba.shape == (L.shape[0], 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_three_classes_and_an_explicit_prior() -> None:
    L, y = planted(9_000, [0.8, 0.75, 0.7, 0.65], coverage=0.6, k=3, seed=2)
    model = LabelModel(prior=[0.2, 0.3, 0.5]).fit(L)
    assert model.chosen_prior == [0.2, 0.3, 0.5]
    assert model.chosen.endswith("/given")
    assert np.mean(model.predict(L) == y) > 0.75


def test_the_dev_split_chooses_and_never_below_majority_vote() -> None:
    L, _ = planted(3_000, [0.9, 0.6, 0.6, 0.6, 0.6], coverage=0.5, seed=4)
    L_dev, _ = planted(300, [0.9, 0.6, 0.6, 0.6, 0.6], coverage=0.5, seed=5)
    # Gold labels that are exactly the majority vote: nothing can score better on them.
    y_dev = LabelModel(models=["majority"], prior="uniform").fit(L).predict(L_dev)
    model = LabelModel().fit(L, L_dev=L_dev, y_dev=y_dev)
    assert set(model.scores) == {f"{m}/{p}" for m in MODELS for p in ("estimated", "uniform")}
    assert max(model.scores.values()) == 1.0
    assert np.mean(model.predict(L_dev) == y_dev) == 1.0
    # With gold labels from the truth, a better model than majority vote is picked.
    L_dev, y_true = planted(600, [0.95, 0.55, 0.55, 0.55, 0.55], coverage=0.7, seed=6)
    model = LabelModel().fit(L, L_dev=L_dev, y_dev=y_true)
    assert not model.chosen.startswith("majority")
    assert model.scores[model.chosen] >= max(
        s for name, s in model.scores.items() if name.startswith("majority")
    )


def test_f1_selection_on_imbalanced_data() -> None:
    L, y = planted(20_000, [0.9, 0.85, 0.6], coverage=0.4, balance=0.1, seed=7)
    model = LabelModel(metric="f1").fit(L[:16_000], L_dev=L[16_000:], y_dev=y[16_000:])

    def f1(predicted: Array) -> float:
        hits = np.sum((predicted == 1) & (y == 1))
        return float(2 * hits / (np.sum(predicted == 1) + np.sum(y == 1)))

    majority = LabelModel(models=["majority"], prior="uniform").fit(L).predict(L)
    assert f1(model.predict(L)) >= f1(majority) - 0.01
    assert f1(model.predict(L)) > 0.35  # about a third of the positives no LF votes on


def test_large_matrices_fit_on_a_sample() -> None:
    L, y = planted(300_000, [0.8, 0.7, 0.7, 0.6], coverage=0.5, seed=8)
    sampled = np.mean(LabelModel(fit_rows=20_000).fit(L).predict(L) == y)
    full = np.mean(LabelModel(fit_rows=300_000).fit(L).predict(L) == y)
    assert sampled > 0.7
    assert abs(sampled - full) < 0.005


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: LabelModel().fit(np.zeros(5, int)), "non-empty 2-D matrix"),
        (lambda: LabelModel().fit(np.zeros((3, 2))), "must hold integers"),
        (lambda: LabelModel().fit(np.array([[0, 5], [1, -1]]), L_dev=None), None),
        (lambda: LabelModel(cardinality=2).fit(np.array([[0, 5], [1, -1]])), "votes are -1..1"),
        (lambda: LabelModel().fit(np.array([[0, -2], [1, 0]])), "votes are -1"),
        (lambda: LabelModel().fit(np.array([[0, 1]]), y_dev=[0]), "both L_dev and y_dev"),
        (lambda: LabelModel().fit(np.array([[0, 1]]), L_dev=np.array([[0]]), y_dev=[0]),
         "must agree"),
        (lambda: LabelModel(models=["snorkel"]).fit(np.array([[0, 1]])), "unknown label model"),
        (lambda: LabelModel().predict(np.array([[0, 1]])), "not fitted yet"),
        (lambda: LabelModel(prior=[0.5, 0.6]).fit(np.array([[0, 1]])), "summing to 1"),
        (lambda: LabelModel(models=["dev_naive_bayes"]).fit(np.array([[0, 1]])),
         "needs a gold dev split"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_reason(call: Any, message: str | None) -> None:
    if message is None:  # a 6-class matrix is fine when the cardinality is left to the data
        call()
        return
    with pytest.raises(LabelModelError, match=message):
        call()


def test_lf_summary_updates_equal_a_fresh_summary() -> None:
    from fmforge.data.labeling.analysis import LFSummary

    rng = np.random.default_rng(11)
    n, m, k = 4_000, 12, 3
    L = np.where(rng.random((n, m)) < 0.3, rng.integers(0, k, (n, m)), -1)
    gold = rng.integers(0, k, n)
    summary = LFSummary(L, k, gold=gold)
    for step in range(20):
        lf = int(rng.integers(0, m))
        column = summary.matrix[:, lf].astype(np.int64)
        edit = rng.random(n) < (0.02 if step % 2 else 0.5)  # small and large edits
        column[edit] = np.where(rng.random(edit.sum()) < 0.5, rng.integers(0, k, edit.sum()), -1)
        summary.replace(lf, column)
        L[:, lf] = column
    assert summary.stats() == LFSummary(L, k, gold=gold).stats()
    first = summary.stats()[0]
    voted = L[:, 0] >= 0
    assert first.coverage == voted.mean()
    assert first.accuracy == np.mean(L[voted, 0] == gold[voted])
    others = (L >= 0).sum(axis=1) - voted
    assert first.overlap == np.mean(voted & (others > 0))
    with pytest.raises(LabelModelError, match="must be 4000 values"):
        summary.replace(0, np.zeros(3, int))
