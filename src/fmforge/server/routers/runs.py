"""The JSON the dashboard reads: the runs table, one run, one metric at chart resolution.

Plain ``def`` routes: FastAPI runs them in its thread pool, so a slow read (a chart of a run
written before summary pyramids reads every chunk) never holds up the event loop, where the
MLflow logging routes and every other request are answered."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from fmforge.errors import InvalidRequest
from fmforge.server.encoding import json_safe
from fmforge.server.state import State
from fmforge.tracking.artifacts import ArtifactsView
from fmforge.tracking.reading import (
    downsample,
    load_run,
    metric_overview,
    read_metric_with_times,
)
from fmforge.tracking.views import RunsView

router = APIRouter(prefix="/api/runs")


@router.get("")
def runs_table(state: State, where: str | None = None, project: str | None = None) -> Response:
    """The runs table (what the dashboard lists), filtered by a runs query."""
    text = state.repo.view(RunsView).table_json(
        where, project=project, heartbeat_timeout_s=state.heartbeat_timeout_s
    )
    return Response(text, media_type="application/json")


@router.get("/{run_id}")
def run(run_id: str, state: State) -> dict[str, Any]:
    """Everything a run's events say: config, lineage, environment, summaries, anomalies,
    checkpoints, evals, samples. Non-finite numbers are sent as the strings NaN/Infinity."""
    found = load_run(state.repo, run_id, heartbeat_timeout_s=state.heartbeat_timeout_s)
    record = dataclasses.asdict(found)
    record["chunks"] = len(record["chunks"])
    experiment = found.experiment or "0"  # the proxy reads the run from the path, not this
    record["artifacts"] = [
        {"path": f.path, "size": f.size,
         "url": f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/"
                f"{quote(f.path)}"}
        for f in state.repo.view(ArtifactsView).files("run/" + run_id)
    ]  # fmt: skip
    return json_safe(record)  # type: ignore[no-any-return]


@router.get("/{run_id}/series")
def series(
    run_id: str, metric: str, state: State, width: int = 1000, start: float | None = None,
    end: float | None = None, axis: str = "step",
) -> Response:  # fmt: skip
    """One metric at chart resolution (each column's min and max, so spikes stay), over
    the steps ``start..end`` when given (a zoomed chart asks again for its range). With
    ``axis=time`` the columns are of wall time and ``steps`` are seconds since the epoch
    (read from every value: the summaries are by step)."""
    if axis not in ("step", "time"):
        raise InvalidRequest(f"query parameter 'axis' must be step or time, got {axis!r}")
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not -(2.0**63) <= bound <= 2.0**63:
            raise InvalidRequest(f"query parameter {name!r} must be a step, got {bound!r}")
    width = max(1, min(width, 10_000))
    if axis == "time":
        _steps, values_all, times = read_metric_with_times(state.repo, run_id, metric)
        order = np.argsort(times, kind="stable")
        millis = times[order] // 1000
        low = None if start is None else start * 1000
        high = None if end is None else end * 1000
        at, values = downsample(millis, values_all[order], width, start=low, end=high)
        finite = np.isfinite(values)
        body = {"metric": metric, "steps": (at[finite] / 1000.0).tolist(),
                "values": values[finite].tolist()}  # fmt: skip
        return Response(orjson.dumps(body), media_type="application/json")
    steps, values = metric_overview(state.repo, run_id, metric, width, start=start, end=end)
    body = {"metric": metric, "steps": steps, "values": values}  # finite values only
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")  # fmt: skip
