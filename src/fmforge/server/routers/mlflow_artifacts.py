"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/``), over fmforge's object store.

A run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment>/<run>/artifacts`` and a logged
model's ``mlflow-artifacts:/<experiment>/models/<id>/artifacts``; MLflow's client turns them
into these routes. An upload is streamed to a temporary file (never held in memory), stored
as an object and recorded as ``ArtifactLogged`` on the owner's stream
(``tracking.artifacts``); a listing is one query of ``ArtifactsView``; a download streams the
object. A registered version's files are served from its commit's checkout
(``model-commits/<commit>/...``, see ``mlflow_registry``). ``/api/2.0/mlflow/artifacts/list``
lists a run's files for clients that ask the tracking API instead.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fmforge.errors import InvalidRequest, ModelNotFound, ObjectNotFound, RunNotFound
from fmforge.server.mlflow_registry import COMMITS, artifact_owner
from fmforge.server.state import ServerState, State
from fmforge.tracking.artifacts import (
    ArtifactsView,
    check_artifact_path,
    delete_artifact,
    store_artifact,
)
from fmforge.tracking.logged_models import STREAM_PREFIX as LOGGED
from fmforge.tracking.views import RunsView

router = APIRouter(prefix="/api/2.0/mlflow-artifacts")
tracking_router = APIRouter(prefix="/api/2.0/mlflow")
_MARKER = ".fmforge-complete"


def _owner(state: ServerState, path: str) -> tuple[str, str]:
    """(owner stream, relative path) of a proxy path; the owner must exist."""
    owner, relative = artifact_owner(path)
    if owner.startswith(LOGGED):
        state.mlflow_registry.logged(owner.removeprefix(LOGGED))
    else:
        record = state.repo.view(RunsView).run(owner.removeprefix("run/"))  # RunNotFound
        if record.lifecycle != "active":
            raise InvalidRequest(f"run {record.id} is deleted: restore it before uploading")
    return owner, relative


def _commit_dir(state: ServerState, path: str) -> tuple[Path, str] | None:
    """(checkout directory, relative path) of a ``model-commits/<commit>/...`` path."""
    parts = path.strip("/").split("/", 2)
    if len(parts) < 2 or parts[0] != COMMITS:
        return None
    return state.mlflow_registry.commit_files(parts[1]), (parts[2] if len(parts) > 2 else "")


@router.put("/artifacts/{path:path}")
async def upload(path: str, request: Request, state: State) -> dict[str, Any]:
    owner, relative = _owner(state, path)
    relative = check_artifact_path(relative)
    handle, name = tempfile.mkstemp(prefix="fmforge-upload-", dir=state.repo.path)
    try:
        with os.fdopen(handle, "wb") as spool:
            async for chunk in request.stream():
                await run_in_threadpool(spool.write, chunk)
        await run_in_threadpool(store_artifact, state.repo, owner, relative, Path(name))
    finally:
        Path(name).unlink(missing_ok=True)
    return {}


@router.get("/artifacts")
def list_artifacts(state: State, path: str = "") -> dict[str, Any]:
    """The entries directly inside ``path``, named by their base names (as MLflow's proxy)."""
    commit = _commit_dir(state, path) if path else None
    if commit is not None:
        root, relative = commit
        folder = root / relative
        if not folder.is_dir():
            return {}
        entries = [
            {"path": p.name, "is_dir": p.is_dir(), **({} if p.is_dir() else
                                                     {"file_size": p.stat().st_size})}
            for p in sorted(folder.iterdir()) if p.name != _MARKER
        ]  # fmt: skip
        return {"files": entries} if entries else {}
    try:
        owner, relative = artifact_owner(path)
    except InvalidRequest:
        return {}  # a folder above any run's artifacts: nothing MLflow lists there
    listing = state.repo.view(ArtifactsView).listing(owner, relative.strip("/"))
    files = [
        {"path": e.path.rsplit("/", 1)[-1], "is_dir": e.is_dir,
         **({} if e.is_dir else {"file_size": e.size})}
        for e in listing
    ]  # fmt: skip
    return {"files": files} if files else {}


@router.get("/artifacts/{path:path}")
def download(path: str, state: State) -> Response:
    commit = _commit_dir(state, path)
    if commit is not None:
        root, relative = commit
        file = root / check_artifact_path(relative)
        if not file.is_file() or file.name == _MARKER:
            raise ObjectNotFound(f"no file {relative!r} in that model version")
        return FileResponse(file, media_type=_media(file.name))
    owner, relative = artifact_owner(path)
    found = state.repo.view(ArtifactsView).file(owner, check_artifact_path(relative))
    if found is None:
        raise ObjectNotFound(f"no artifact {relative!r} in {owner}")
    reader = state.repo.objects.open(found.digest)

    def chunks() -> Any:
        with reader:
            while block := reader.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(), media_type=_media(found.path), headers={"Content-Length": str(found.size)}
    )


@router.delete("/artifacts/{path:path}")
def delete(path: str, state: State) -> dict[str, Any]:
    owner, relative = _owner(state, path)
    relative = check_artifact_path(relative)
    index = state.repo.view(ArtifactsView)
    if index.file(owner, relative) is None and not index.files(owner, relative):
        raise ObjectNotFound(f"no artifact {relative!r} in {owner}")
    delete_artifact(state.repo, owner, relative)
    return {}


@tracking_router.get("/artifacts/list")
def list_run_artifacts(
    state: State, run_id: str | None = None, run_uuid: str | None = None, path: str = ""
) -> dict[str, Any]:
    found = run_id or run_uuid
    if not found:
        raise InvalidRequest("query parameter 'run_id' is required")
    info = state.mlflow.run_json(found)["info"]
    folder = check_artifact_path(path, allow_empty=True)
    listing = state.repo.view(ArtifactsView).listing("run/" + found, folder)
    files = [{"path": e.path, "is_dir": e.is_dir, **({} if e.is_dir else {"file_size": e.size})}
             for e in listing]  # fmt: skip
    return {"root_uri": info["artifact_uri"], "files": files}


def _media(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


__all__ = ["ModelNotFound", "RunNotFound", "router", "tracking_router"]
