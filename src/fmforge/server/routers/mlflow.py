"""The part of MLflow's REST API (``/api/2.0/mlflow/``) that its client needs for tracking.

With ``MLFLOW_TRACKING_URI=http://HOST:PORT`` pointing at ``fmforge ui``, unchanged MLflow code
(``set_experiment``, ``start_run``, ``log_param(s)``, ``set_tag``, ``log_metric(s)``,
``end_run``, ``get_run``, ``search_runs``, ``get_metric_history``) records fmforge runs
(``mlflow_store``). Bodies are validated as MLflow's request messages (``mlflow_schemas``);
errors come back as MLflow's ``{"error_code", "message"}`` (``fmforge.server.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fmforge.errors import InvalidRequest
from fmforge.server.mlflow_schemas import (
    CreateExperiment,
    CreateRun,
    LogBatch,
    LogMetric,
    LogParam,
    SearchRuns,
    SetTag,
    UpdateRun,
    read,
)
from fmforge.server.state import State

PREFIX = "/api/2.0/mlflow"
router = APIRouter(prefix=PREFIX)


@router.get("/experiments/get-by-name")
async def get_experiment_by_name(experiment_name: str, state: State) -> dict[str, Any]:
    return {"experiment": state.mlflow.experiment_by_name(experiment_name)}


@router.get("/experiments/get")
async def get_experiment(experiment_id: str, state: State) -> dict[str, Any]:
    return {"experiment": state.mlflow.experiment(experiment_id)}


@router.post("/experiments/create")
async def create_experiment(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateExperiment, state.limits)
    return {"experiment_id": state.mlflow.create_experiment(body.name)}


@router.post("/runs/create")
async def create_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateRun, state.limits)
    run = state.mlflow.start_run(body.experiment_id, body.run_name, body.tags)
    return {"run": state.mlflow.run_json(run.id)}


@router.post("/runs/update")
async def update_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, UpdateRun, state.limits)
    state.mlflow.end_run(body.run_id, body.status)
    return {"run_info": state.mlflow.run_json(body.run_id)["info"]}


@router.post("/runs/log-batch")
async def log_batch(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LogBatch, state.limits)
    state.mlflow.log_batch(body.run_id, body.metrics, body.params, body.tags)
    return {}


@router.post("/runs/log-metric")
async def log_metric(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LogMetric, state.limits)
    state.mlflow.log_batch(body.run_id, metrics=[body])
    return {}


@router.post("/runs/log-parameter")
async def log_parameter(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LogParam, state.limits)
    state.mlflow.log_batch(body.run_id, params=[body])
    return {}


@router.post("/runs/set-tag")
async def set_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, SetTag, state.limits)
    state.mlflow.log_batch(body.run_id, tags=[body])
    return {}


@router.get("/runs/get")
async def get_run(
    state: State, run_id: str | None = None, run_uuid: str | None = None
) -> dict[str, Any]:
    found = run_id or run_uuid
    if not found:
        raise InvalidRequest("query parameter 'run_id' is required")
    return {"run": state.mlflow.run_json(found)}


@router.post("/runs/search")
async def search_runs(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, SearchRuns, state.limits)
    runs = state.mlflow.search(body.experiment_ids, body.filter, body.max_results)
    return {"runs": runs}


@router.get("/metrics/get-history")
def get_metric_history(  # every value of a metric: in the thread pool, off the event loop
    state: State, metric_key: str, run_id: str | None = None, run_uuid: str | None = None
) -> dict[str, Any]:
    found = run_id or run_uuid
    if not found:
        raise InvalidRequest("query parameter 'run_id' is required")
    return {"metrics": state.mlflow.metric_history(found, metric_key)}
