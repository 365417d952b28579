"""``--auto``: choose λ (and the density, for TIES and DARE) by a score measured on each
input's dev split, and report what the merge kept.

Task arithmetic's λ "is determined using held-out validation sets" (Ilharco et al.); TIES and
DARE add a density. The search tries every candidate of a small grid, scores each merged model
with ``score`` (a mapping task -> dev score, higher is better; the caller merges and evaluates,
e.g. with ``merged_tensors`` and its task heads), keeps the best mean, and reports each task's
score as a share of its single-task finetune's AND the share of the gain over λ = 0 (the base
with the task heads) that the merge kept, so an easy benchmark cannot flatter a method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fmforge.errors import InvalidMerge
from fmforge.merging.base import MergeSpec
from fmforge.merging.registry import get_method

LAMBDAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
DENSITIES = (0.1, 0.2, 0.3, 0.5, 0.7)

Score = Callable[[MergeSpec], Mapping[str, float]]


@dataclass(frozen=True)
class Trial:
    spec: MergeSpec
    scores: dict[str, float]

    @property
    def objective(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


@dataclass
class AutoResult:
    best: Trial
    floor: dict[str, float]  # λ = 0
    single: dict[str, float]  # each task's own finetune
    trials: list[Trial] = field(default_factory=list)

    @property
    def normalized(self) -> dict[str, float]:
        """Each task's score as a share of its single-task finetune's."""
        return {t: self.best.scores[t] / self.single[t] for t in self.single}

    @property
    def gain_kept(self) -> dict[str, float]:
        """Each task's share of the gain over λ = 0 kept (1: all of it; None-free: a task whose
        finetune gained nothing counts as fully kept)."""
        kept = {}
        for task, single in self.single.items():
            gain = single - self.floor[task]
            kept[task] = (self.best.scores[task] - self.floor[task]) / gain if gain else 1.0
        return kept

    def summary(self) -> dict[str, Any]:
        normalized, kept = self.normalized, self.gain_kept
        return {
            "lambda": self.best.spec.lambda_, "density": self.best.spec.density,
            "scores": self.best.scores, "floor": self.floor, "single": self.single,
            "normalized": normalized, "gain_kept": kept,
            "mean_normalized": sum(normalized.values()) / len(normalized),
            "mean_gain_kept": sum(kept.values()) / len(kept),
            "trials": [{"lambda": t.spec.lambda_, "density": t.spec.density,
                        "objective": t.objective} for t in self.trials],
        }  # fmt: skip


def search(
    spec: MergeSpec,
    score: Score,
    single: Mapping[str, float],
    *,
    lambdas: Sequence[float] = LAMBDAS,
    densities: Sequence[float] = DENSITIES,
) -> AutoResult:
    """Try every (λ, density) of the grid on ``spec``; the best by mean dev score."""
    method = get_method(spec.method)
    if "lambda" not in method.parameters:
        raise InvalidMerge(f"--auto chooses λ, and method {method.name} has none")
    if not lambdas:
        raise InvalidMerge("--auto needs at least one λ to try")
    trims = method.trim is not None
    grid = [(lam, d) for lam in lambdas for d in (densities if trims else [None])]
    floor = dict(score(_with(spec, 0.0, None)))
    _check_tasks(floor, single)
    trials = []
    for lam, density in grid:
        scores = dict(score(_with(spec, lam, density)))
        _check_tasks(scores, single)
        trials.append(Trial(_with(spec, lam, density), scores))
    best = max(trials, key=lambda t: t.objective)  # the first of equals: grid order
    return AutoResult(best, floor, dict(single), trials)


def _with(spec: MergeSpec, lam: float, density: float | None) -> MergeSpec:
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    data["lambda"] = lam
    if density is not None:
        data["density"] = density
    return MergeSpec.model_validate(data)


def _check_tasks(scores: Mapping[str, float], single: Mapping[str, float]) -> None:
    if set(scores) != set(single):
        raise InvalidMerge(
            f"the score names tasks {sorted(scores)}, the single-task scores {sorted(single)}"
        )
