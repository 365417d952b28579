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
    "runs_frame",
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


@mediated("list", targets.fixed("run"))
def runs_frame(
    where: str | None = None, *, project: str | None = None, repo: Repository | None = None
) -> Any:
    """The runs a query selects as a pandas DataFrame, newest first, as ``mlflow.search_runs``
    gives them: ``run_id``, ``name``, ``project``, ``status``, ``start_time`` (UTC),
    ``duration_s``, ``parent``, then ``metrics.<name>`` (the last value), ``params.<key>``
    (the config, flattened) and ``tags.<key>``. Needs pandas."""
    import pandas as pd

    from fmforge.tracking.environment import flatten

    if repo is None:
        with Repository.open() as opened:
            return runs_frame(where, project=project, repo=opened)
    rows = []
    for run in repo.view(RunsView).rows(where, project=project):
        row: dict[str, Any] = {
            "run_id": run["id"], "name": run["name"], "project": run["project"],
            "status": run["status"], "start_time": pd.Timestamp(run["started"], unit="s", tz="UTC"),
            "duration_s": run["duration_s"], "parent": run["parent"],
        }  # fmt: skip
        row.update({f"metrics.{k}": v["last"] for k, v in sorted(run["metrics"].items())})
        row.update({f"params.{k}": v for k, v in sorted(flatten(run["config"]).items())})
        row.update({f"tags.{k}": v for k, v in sorted(run["tag_values"].items())})
        rows.append(row)
    columns = ["run_id", "name", "project", "status", "start_time", "duration_s", "parent"]
    return pd.DataFrame(rows, columns=None if rows else columns)
