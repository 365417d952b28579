"""Reading runs back: metric series from chunks, everything else from the runs projection."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from fmforge.errors import RunNotFound
from fmforge.repository import Repository
from fmforge.tracking.chunks import read_series
from fmforge.tracking.views import (
    DEFAULT_TIMEOUT_S,
    RunRecord,
    RunsView,
    epoch_seconds,
    merge_summaries,
)

__all__ = [
    "RunNotFound",
    "RunRecord",
    "dataset_usage",
    "downsample",
    "epoch_seconds",
    "load_run",
    "merge_summaries",
    "metric_overview",
    "read_metric",
    "read_metric_with_times",
    "run_summary",
]


def load_run(
    repo: Repository, run_id: str, *, heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S
) -> RunRecord:
    """Everything run ``run_id``'s events say (from the runs projection)."""
    return repo.view(RunsView).run(run_id, heartbeat_timeout_s=heartbeat_timeout_s)


def dataset_usage(repo: Repository) -> list[dict[str, Any]]:
    """Every run that named datasets at its start, with the checkpoints it committed: what
    the dataset domain's lineage asks (see ``RunsIndex.dataset_usage``)."""
    return repo.view(RunsView).dataset_usage()


def run_summary(repo: Repository, run_id: str) -> dict[str, dict[str, Any]]:
    return load_run(repo, run_id).summary


def read_metric(
    repo: Repository, run_id: str, name: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(steps, values) of metric ``name`` of a run, every value exactly as logged."""
    steps, values = read_metric_with_times(repo, run_id, name)[:2]
    return steps, values


def read_metric_with_times(
    repo: Repository, run_id: str, name: str
) -> tuple[np.ndarray[Any, Any], ...]:
    """(steps, values, times in µs since the epoch) of metric ``name`` of a run."""
    index = repo.view(RunsView)
    index.run(run_id)  # RunNotFound for an unknown run
    chunks = (repo.objects.get(c.digest) for c in index.chunks(run_id, metric=name))
    return read_series(chunks, name, with_times=True)


def downsample(
    steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any], width: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """At most about ``2 * width`` points: per column, the minimum and the maximum, in step
    order (vectorised: columns of equal size, the remainder in one more)."""
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if values.size <= 2 * width:
        return steps, values
    size = values.size // width
    body = values[: size * width].reshape(width, size)
    offsets = np.arange(width) * size
    low, high = offsets + body.argmin(axis=1), offsets + body.argmax(axis=1)
    first, second = np.minimum(low, high), np.maximum(low, high)
    pairs = [first, second]
    if size * width < values.size:
        tail = values[size * width :]
        ends = sorted({size * width + int(tail.argmin()), size * width + int(tail.argmax())})
        pairs = [np.append(first, ends[0]), np.append(second, ends[-1])]
    keep = np.stack(pairs, axis=1).ravel()  # column by column: already in step order
    keep = keep[np.concatenate(([True], keep[1:] != keep[:-1]))]  # a flat column's one point
    return steps[keep], values[keep]


@lru_cache(maxsize=256)
def _chunk_series(repo_objects: Any, digest: str, name: str) -> tuple[np.ndarray[Any, Any], ...]:
    # Chunks never change (content addressed): a decoded series can be kept as long as wanted.
    return read_series([repo_objects.get(digest)], name)


def metric_overview(
    repo: Repository,
    run_id: str,
    name: str,
    width: int = 1000,
    *,
    start: float | None = None,
    end: float | None = None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A metric over steps ``start..end`` (default: all) reduced to about ``2 * width`` points
    keeping each column's min and max (what a chart of that width can show; spikes never
    vanish). Decoded chunks are cached."""
    index = repo.view(RunsView)
    index.run(run_id)  # RunNotFound for an unknown run
    refs = index.chunks(run_id, metric=name, start=start, end=end)
    parts = [_chunk_series(repo.objects, c.digest, name) for c in refs]
    steps = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    values = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if start is not None or end is not None:
        inside = (steps >= (-math.inf if start is None else start)) & (
            steps <= (math.inf if end is None else end)
        )
        steps, values = steps[inside], values[inside]
    return downsample(steps, values, width)
