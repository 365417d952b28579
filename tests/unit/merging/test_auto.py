"""``--auto``'s search loop with a synthetic dev score: the best (λ, density) found, and each
task's share of its single-task score and of the gain over λ = 0."""

from __future__ import annotations

import pytest

from fmforge.errors import InvalidMerge
from fmforge.merging import MergeSpec, search

SINGLE = {"sms": 0.95, "youtube": 0.90}


def score(spec: MergeSpec) -> dict[str, float]:
    """Peaks at λ = 0.75 and density 0.3; λ = 0 is the floor."""
    penalty = (spec.lambda_ - 0.75) ** 2 + (spec.density - 0.3) ** 2
    if spec.lambda_ == 0:
        return {"sms": 0.80, "youtube": 0.70}
    return {"sms": 0.94 - penalty, "youtube": 0.88 - 2 * penalty}


def test_finds_the_best_lambda_and_density() -> None:
    spec = MergeSpec.build("ties", ["a@main", "b@main"], base="m@main")
    result = search(spec, score, SINGLE)
    assert (result.best.spec.lambda_, result.best.spec.density) == (0.75, 0.3)
    assert len(result.trials) == 6 * 5
    assert result.floor == {"sms": 0.80, "youtube": 0.70}
    assert result.normalized == pytest.approx({"sms": 0.94 / 0.95, "youtube": 0.88 / 0.90})
    assert result.gain_kept == pytest.approx({"sms": 0.14 / 0.15, "youtube": 0.18 / 0.20})
    summary = result.summary()
    assert summary["mean_gain_kept"] == pytest.approx((0.14 / 0.15 + 0.18 / 0.20) / 2)
    assert result.best.spec.method == "ties"
    assert result.best.spec.base == "m@main"


def test_task_arithmetic_searches_lambda_only() -> None:
    spec = MergeSpec.build("task_arithmetic", ["a@main", "b@main"], base="m@main")
    result = search(spec, score, SINGLE, lambdas=(0.5, 0.75, 1.0))
    assert [t.spec.lambda_ for t in result.trials] == [0.5, 0.75, 1.0]
    assert result.best.spec.lambda_ == 0.75
    assert "density" not in result.best.spec.given_parameters()


def test_refuses_a_method_without_lambda_and_scores_of_other_tasks() -> None:
    with pytest.raises(InvalidMerge, match="method linear has none"):
        search(MergeSpec.build("linear", ["a@main"]), score, SINGLE)
    spec = MergeSpec.build("task_arithmetic", ["a@main"], base="m@main")
    with pytest.raises(InvalidMerge, match="the score names tasks"):
        search(spec, score, {"sms": 0.9})
