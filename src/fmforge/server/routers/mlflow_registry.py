"""MLflow's logged-models, registered-models and model-versions routes (``mlflow_registry``
says what they mean in fmforge's terms). Registering a version commits files, so those routes
run in the thread pool."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fmforge.server.mlflow_schemas import (
    Alias,
    CreateLoggedModel,
    CreateModelVersion,
    CreateRegisteredModel,
    DescribeRegisteredModel,
    DescribeVersion,
    FinalizeLoggedModel,
    LatestVersions,
    LoggedModelParams,
    LoggedModelTags,
    M,
    RegisteredModelTag,
    RegisteredName,
    RenameRegisteredModel,
    SearchLoggedModels,
    SearchRegistry,
    VersionRef,
    VersionTag,
    parse,
    read,
)
from fmforge.server.state import State

router = APIRouter(prefix="/api/2.0/mlflow")


def _query(request: Request, model: type[M], state: State) -> M:
    """A GET's query parameters read as ``model`` (lists from repeated parameters)."""
    values: dict[str, Any] = {}
    for key in request.query_params:
        many = request.query_params.getlist(key)
        values[key] = many if key in ("order_by", "stages") else many[-1]
    return parse(json.dumps(values).encode(), model, state.limits)


# ---- logged models ----------------------------------------------------------------------------


@router.post("/logged-models")
async def create_logged_model(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateLoggedModel, state.limits)
    registry = state.mlflow_registry
    model = registry.create_logged(
        body.experiment_id, body.name, body.model_type, body.source_run_id, body.params,
        body.tags,
    )  # fmt: skip
    return {"model": registry.logged_json(model)}


@router.post("/logged-models/search")
async def search_logged_models(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, SearchLoggedModels, state.limits)
    return await run_in_threadpool(
        state.mlflow_registry.search_logged, body.experiment_ids, body.filter, body.order_by,
        body.max_results, body.page_token,
    )  # fmt: skip


@router.get("/logged-models/{model_id}")
def get_logged_model(model_id: str, state: State) -> dict[str, Any]:
    registry = state.mlflow_registry
    return {"model": registry.logged_json(registry.logged(model_id))}


@router.patch("/logged-models/{model_id}")
async def finalize_logged_model(model_id: str, request: Request, state: State) -> dict[str, Any]:
    body = await read(request, FinalizeLoggedModel, state.limits)
    registry = state.mlflow_registry
    return {"model": registry.logged_json(registry.finalize_logged(model_id, body.status))}


@router.delete("/logged-models/{model_id}")
def delete_logged_model(model_id: str, state: State) -> dict[str, Any]:
    state.mlflow_registry.delete_logged(model_id)
    return {}


@router.patch("/logged-models/{model_id}/tags")
async def set_logged_model_tags(model_id: str, request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LoggedModelTags, state.limits)
    state.mlflow_registry.tag_logged(model_id, {t.key: t.value for t in body.tags})
    return {}


@router.delete("/logged-models/{model_id}/tags/{key:path}")
def delete_logged_model_tag(model_id: str, key: str, state: State) -> dict[str, Any]:
    state.mlflow_registry.tag_logged(model_id, {}, [key])
    return {}


@router.post("/logged-models/{model_id}/params")
async def log_logged_model_params(model_id: str, request: Request, state: State) -> dict[str, Any]:
    body = await read(request, LoggedModelParams, state.limits)
    state.mlflow_registry.params_logged(model_id, {p.key: p.value for p in body.params})
    return {}


# ---- registered models ------------------------------------------------------------------------


@router.post("/registered-models/create")
async def create_registered_model(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateRegisteredModel, state.limits)
    registry = state.mlflow_registry
    registry.create_registered(body.name, body.tags, body.description)
    return {"registered_model": registry.get_registered(body.name)}


@router.get("/registered-models/get")
def get_registered_model(name: str, state: State) -> dict[str, Any]:
    return {"registered_model": state.mlflow_registry.get_registered(name)}


@router.post("/registered-models/rename")
async def rename_registered_model(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RenameRegisteredModel, state.limits)
    state.mlflow_registry.rename_registered(body.name, body.new_name)
    return {"registered_model": state.mlflow_registry.get_registered(body.new_name)}


@router.patch("/registered-models/update")
async def update_registered_model(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, DescribeRegisteredModel, state.limits)
    state.mlflow_registry.describe(body.name, body.description)
    return {"registered_model": state.mlflow_registry.get_registered(body.name)}


@router.delete("/registered-models/delete")
async def delete_registered_model(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RegisteredName, state.limits)
    await run_in_threadpool(state.mlflow_registry.delete_registered, body.name)
    return {}


@router.post("/registered-models/set-tag")
async def set_registered_model_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RegisteredModelTag, state.limits)
    state.mlflow_registry.tag(body.name, {body.key: body.value})
    return {}


@router.delete("/registered-models/delete-tag")
async def delete_registered_model_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, RegisteredModelTag, state.limits)
    state.mlflow_registry.tag(body.name, {}, [body.key])
    return {}


@router.get("/registered-models/search")
def search_registered_models(request: Request, state: State) -> dict[str, Any]:
    body = _query(request, SearchRegistry, state)
    return state.mlflow_registry.search_registered(
        body.filter, body.order_by, body.max_results, body.page_token
    )


@router.get("/registered-models/get-latest-versions")  # one route per method (OpenAPI ids)
@router.post("/registered-models/get-latest-versions")
async def get_latest_versions(request: Request, state: State) -> dict[str, Any]:
    if request.method == "GET":
        body = _query(request, LatestVersions, state)
    else:
        body = await read(request, LatestVersions, state.limits)
    return {"model_versions": state.mlflow_registry.latest_versions(body.name)}


@router.post("/registered-models/alias")
async def set_alias(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, Alias, state.limits)
    await run_in_threadpool(state.mlflow_registry.set_alias, body.name, body.alias, body.version)
    return {}


@router.delete("/registered-models/alias")
async def delete_alias(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, Alias, state.limits)
    await run_in_threadpool(state.mlflow_registry.delete_alias, body.name, body.alias)
    return {}


@router.get("/registered-models/alias")
def get_version_by_alias(name: str, alias: str, state: State) -> dict[str, Any]:
    return {"model_version": state.mlflow_registry.by_alias(name, alias)}


# ---- model versions ---------------------------------------------------------------------------


@router.post("/model-versions/create")
async def create_model_version(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, CreateModelVersion, state.limits)
    version = await run_in_threadpool(
        state.mlflow_registry.create_version, body.name, body.source, body.run_id, body.tags,
        body.description, body.model_id,
    )  # fmt: skip
    return {"model_version": version}


@router.get("/model-versions/get")
def get_model_version(name: str, version: str, state: State) -> dict[str, Any]:
    return {"model_version": state.mlflow_registry.get_version(name, version)}


@router.patch("/model-versions/update")
async def update_model_version(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, DescribeVersion, state.limits)
    state.mlflow_registry.describe(body.name, body.description, body.version)
    return {"model_version": state.mlflow_registry.get_version(body.name, body.version)}


@router.delete("/model-versions/delete")
async def delete_model_version(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, VersionRef, state.limits)
    await run_in_threadpool(state.mlflow_registry.delete_version, body.name, body.version)
    return {}


@router.post("/model-versions/set-tag")
async def set_model_version_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, VersionTag, state.limits)
    state.mlflow_registry.tag(body.name, {body.key: body.value}, version=body.version)
    return {}


@router.delete("/model-versions/delete-tag")
async def delete_model_version_tag(request: Request, state: State) -> dict[str, Any]:
    body = await read(request, VersionTag, state.limits)
    state.mlflow_registry.tag(body.name, {}, [body.key], version=body.version)
    return {}


@router.get("/model-versions/search")
def search_model_versions(request: Request, state: State) -> dict[str, Any]:
    body = _query(request, SearchRegistry, state)
    return state.mlflow_registry.search_versions(
        body.filter, body.order_by, body.max_results, body.page_token
    )


@router.get("/model-versions/get-download-uri")
def get_download_uri(name: str, version: str, state: State) -> dict[str, Any]:
    return {"artifact_uri": state.mlflow_registry.download_uri(name, version)}
