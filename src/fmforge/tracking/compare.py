"""Comparing runs: what differs in their configs, their metrics, where their curves part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.repository import Repository
from fmforge.tracking.environment import flatten
from fmforge.tracking.reading import load_run, read_metric

_MISSING = "<unset>"


@dataclass
class Comparison:
    names: list[str]
    config_diff: dict[str, list[Any]]  # key -> value per run, for keys that differ
    metrics: dict[str, list[dict[str, Any]]]  # metric -> summary per run ({} if absent)
    divergence: dict[str, int | None]  # metric -> first step where a run departs from the first


def first_divergence(
    a: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    b: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    tolerance: float,
) -> int | None:
    """The first common step where ``|b - a| > tolerance * max(|a|, |b|)``; NaN on one side
    only counts as diverged."""
    steps, in_a, in_b = np.intersect1d(a[0], b[0], return_indices=True)
    if steps.size == 0:
        return None
    x, y = a[1][in_a], b[1][in_b]
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.abs(x), np.abs(y))
        apart = np.abs(y - x) > tolerance * scale
    apart |= np.isnan(x) != np.isnan(y)
    hits = np.flatnonzero(apart)
    return int(steps[hits[0]]) if hits.size else None


@mediated(
    "read",
    lambda repo, args: (
        [("read", targets.run()(repo, {"run_id": r})) for r in args["run_ids"]] or "run"
    ),
)
def compare_runs(repo: Repository, run_ids: list[str], *, tolerance: float = 0.05) -> Comparison:
    records = [load_run(repo, run_id) for run_id in run_ids]
    configs = [flatten(r.config) for r in records]
    keys = sorted(set().union(*configs))
    config_diff = {
        key: [c.get(key, _MISSING) for c in configs]
        for key in keys
        if len({repr(c.get(key, _MISSING)) for c in configs}) > 1
    }
    metric_names = sorted(set().union(*(r.summary for r in records)))
    metrics = {m: [r.summary.get(m, {}) for r in records] for m in metric_names}
    divergence: dict[str, int | None] = {}
    for metric in metric_names:
        if not all(metric in r.summary for r in records):
            continue
        curves = [read_metric(repo, r.id, metric) for r in records]
        steps = [first_divergence(curves[0], other, tolerance) for other in curves[1:]]
        found = [s for s in steps if s is not None]
        divergence[metric] = min(found) if found else None
    return Comparison([r.name for r in records], config_diff, metrics, divergence)
