"""Reading runs back: metric series from chunks, charts from their summaries
(``fmforge.tracking.overview``), everything else from the runs projection."""

from __future__ import annotations

from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import RunNotFound
from fmforge.repository import Repository
from fmforge.tracking.chunks import read_series
from fmforge.tracking.overview import downsample, metric_overview
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
    "list_runs",
    "load_run",
    "merge_summaries",
    "metric_overview",
    "read_metric",
    "read_metric_with_times",
    "run_summary",
]


@mediated("read", targets.run())
def load_run(
    repo: Repository, run_id: str, *, heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S
) -> RunRecord:
    """Everything run ``run_id``'s events say (from the runs projection)."""
    return repo.view(RunsView).run(run_id, heartbeat_timeout_s=heartbeat_timeout_s)


@mediated("read_meta", targets.fixed("run"))
def dataset_usage(repo: Repository) -> list[dict[str, Any]]:
    """Every run that named datasets at its start, with the checkpoints it committed: what
    the dataset domain's lineage asks (see ``RunsIndex.dataset_usage``)."""
    return repo.view(RunsView).dataset_usage()


@mediated("list", targets.fixed("run"))
def list_runs(
    repo: Repository,
    where: str | None = None,
    *,
    project: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Every run (newest first), filtered by a runs query (``fmforge.tracking.query``): what
    ``fmforge runs ls`` and the dashboard list."""
    return repo.view(RunsView).rows(where, project=project, limit=limit)


def run_summary(repo: Repository, run_id: str) -> dict[str, dict[str, Any]]:
    return load_run(repo, run_id).summary


@mediated("read", targets.run())
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
