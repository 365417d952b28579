"""MLflow's tracking REST API (``/api/2.0/mlflow/``): experiments and runs.

With ``MLFLOW_TRACKING_URI=http://HOST:PORT`` pointing at ``fmforge ui``, unchanged MLflow code
records fmforge runs (``mlflow_store``); its artifacts go through ``mlflow_artifacts`` and its
logged and registered models through ``mlflow_registry``. Bodies are validated as MLflow's
request messages (``mlflow_schemas``); errors come back as MLflow's ``{"error_code",
"message"}`` (``fmforge.server.errors``). Plain ``def`` routes run in FastAPI's thread pool (a
search reads many runs; a run's first call after a restart reads its state back).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fmforge.errors import InvalidRequest
from fmforge.server.mlflow_schemas import (
    CreateExperiment,
    CreateRun,
    DeleteExperimentTag,
    DeleteTag,
    ExperimentId,
    LogBatch,
    LogInputs,
    LogMetric,
    LogOutputs,
    LogParam,
    RunId,
    SearchExperiments,
    SearchRuns,
    SetExperimentTag,
    SetTag,
    UpdateExperiment,
    UpdateRun,
    parse,
    read,
)
from fmforge.server.state import State

PREFIX = "/api/2.0/mlflow"
router = APIRouter(prefix=PREFIX)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


# ---- experiments ----------------------------------------------------------------------------


@router.get("/experiments/get-by-name")
def get_experiment_by_name(experiment_name: str, state: State) -> dict[str, Any]:
    return {"experiment": state.mlflow.experiment_by_name(experiment_name)}


@router.get("/experiments/get")
def get_experiment(experiment_id: str, state: State) -> dict[str, Any]:
    return {"experiment": state.mlflow.experiment(experiment_id)}


@router.post("/experiments/create")
async def create_experiment(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateExperiment, state.limits)
    return {"experiment_id": state.mlflow.create_experiment(body.name, body.tags)}


@router.get("/experiments/search")  # one route per method: OpenAPI ids stay unique
@router.post("/experiments/search")
async def search_experiments(request: Request, state: State) -> dict[str, Any]:
    if request.method == "GET":
        query: dict[str, Any] = dict(request.query_params)
        query["order_by"] = request.query_params.getlist("order_by")
        body = parse(json.dumps(query).encode(), SearchExperiments, state.limits)
    else:
        body = await read(request, SearchExperiments, state.limits)
    return state.mlflow.search_experiments(
        body.filter, body.order_by, None if body.view_type is None else str(body.view_type),
        body.max_results, body.page_token,
    )  # fmt: skip


@router.post("/experiments/update")
async def update_experiment(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, UpdateExperiment, state.limits)
    state.mlflow.rename_experiment(body.experiment_id, body.new_name)
    return {}


@router.post("/experiments/delete")
async def delete_experiment(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, ExperimentId, state.limits)
    state.mlflow.set_experiment_lifecycle(body.experiment_id, deleted=True)
    return {}


@router.post("/experiments/restore")
async def restore_experiment(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, ExperimentId, state.limits)
    state.mlflow.set_experiment_lifecycle(body.experiment_id, deleted=False)
    return {}


@router.post("/experiments/set-experiment-tag")
async def set_experiment_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, SetExperimentTag, state.limits)
    state.mlflow.tag_experiment(body.experiment_id, {body.key: body.value})
    return {}


@router.post("/experiments/delete-experiment-tag")
async def delete_experiment_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, DeleteExperimentTag, state.limits)
    state.mlflow.tag_experiment(body.experiment_id, {}, [body.key])
    return {}


# ---- runs -----------------------------------------------------------------------------------


@router.post("/runs/create")
async def create_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateRun, state.limits)
    run = state.mlflow.start_run(
        body.experiment_id, body.run_name, body.tags, start_time=body.start_time,
        user_id=body.user_id, host=_client(request),
    )  # fmt: skip
    return {"run": state.mlflow.run_json(run.id)}


@router.post("/runs/update")
async def update_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, UpdateRun, state.limits)
    await run_in_threadpool(state.mlflow.update_run, body.run_id, body.status, body.run_name)
    return {"run_info": state.mlflow.run_json(body.run_id)["info"]}


@router.post("/runs/delete")
async def delete_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RunId, state.limits)
    state.mlflow.set_run_lifecycle(body.run_id, deleted=True)
    return {}


@router.post("/runs/restore")
async def restore_run(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RunId, state.limits)
    state.mlflow.set_run_lifecycle(body.run_id, deleted=False)
    return {}


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


@router.post("/runs/delete-tag")
async def delete_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, DeleteTag, state.limits)
    state.mlflow.delete_tag(body.run_id, body.key)
    return {}


@router.post("/runs/log-inputs")
async def log_inputs(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LogInputs, state.limits)
    state.mlflow.log_inputs(body.run_id, body.datasets, [m.model_id for m in body.models])
    return {}


@router.post("/runs/outputs")
async def log_outputs(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LogOutputs, state.limits)
    models = [{"model_id": m.model_id, "step": m.step or 0} for m in body.models]
    state.mlflow.log_outputs(body.run_id, models)
    return {}


@router.get("/runs/get")
def get_run(state: State, run_id: str | None = None, run_uuid: str | None = None) -> dict[str, Any]:
    found = run_id or run_uuid
    if not found:
        raise InvalidRequest("query parameter 'run_id' is required")
    return {"run": state.mlflow.run_json(found)}


@router.post("/runs/search")
async def search_runs(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, SearchRuns, state.limits)
    view = None if body.run_view_type is None else str(body.run_view_type)
    return await run_in_threadpool(
        state.mlflow.search, body.experiment_ids, body.filter, body.max_results, body.order_by,
        view, body.page_token,
    )  # fmt: skip


@router.get("/metrics/get-history")
def get_metric_history(  # every value of a metric: in the thread pool, off the event loop
    state: State, metric_key: str, run_id: str | None = None, run_uuid: str | None = None
) -> dict[str, Any]:
    found = run_id or run_uuid
    if not found:
        raise InvalidRequest("query parameter 'run_id' is required")
    return {"metrics": state.mlflow.metric_history(found, metric_key)}
