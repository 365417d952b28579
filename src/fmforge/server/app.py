"""``fmforge ui``: a FastAPI app over one repository: the dashboard, the JSON it reads, and
MLflow's tracking API.

The dashboard is static (``static/``: HTML, one script, uPlot vendored): no build step, nothing
fetched from elsewhere. The routes live in ``routers/`` (one module per domain) and share a
``ServerState``; ``guards`` checks every request's Host, origin and size before a route runs;
``identity`` authenticates, decides and records it when access control is on (a background
process signs checkpoints of the ledger meanwhile); ``errors`` answers every error in one
JSON shape. Routes that read much (the runs JSON and
charts, reports, MLflow's metric history) are plain ``def``s that FastAPI runs in its thread
pool, so a slow read never stalls the event loop, where the other requests (MLflow logging
among them) are answered; the repository is safe to share between threads (the ledger and the
read models give each thread its own reading connection, and serialise writes and catch-ups).
Runs opened through the MLflow API flush from their own threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fmforge.access.audit import BackgroundCheckpointer
from fmforge.access.mediation import enabled
from fmforge.errors import FmforgeError
from fmforge.repository import DIRNAME, Repository
from fmforge.server import errors
from fmforge.server.guards import Limits, RequestGuard, allowed_hosts
from fmforge.server.identity import PrincipalMiddleware
from fmforge.server.routers import (
    audit,
    datasets,
    mlflow,
    mlflow_artifacts,
    mlflow_registry,
    models,
    pages,
    runs,
)
from fmforge.server.state import ServerState
from fmforge.settings import load_settings
from fmforge.tracking.heartbeat import record_lost_heartbeats
from fmforge.tracking.runs import HEARTBEAT_S

STATIC = pages.STATIC
logger = logging.getLogger(__name__)


def create_app(
    root: str | Path,
    *,
    heartbeat_timeout_s: float = 3 * HEARTBEAT_S,
    bind_host: str | None = None,
) -> FastAPI:
    """The app over the repository at ``root``. A few times per ``heartbeat_timeout_s`` it
    records runs silent for longer as ``heartbeat_lost`` anomalies. ``bind_host``, the
    interface the server listens on, is a host name it answers besides the configured ones."""
    root = Path(root)
    settings = load_settings(root / DIRNAME / "config.toml")
    state = ServerState(
        root, heartbeat_timeout_s=heartbeat_timeout_s, limits=Limits.from_settings(settings)
    )
    # No /docs or /redoc: their pages load scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="fmforge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.fmforge = state
    for module in (pages, runs, models, mlflow, mlflow_registry, mlflow_artifacts, datasets, audit):
        app.include_router(module.router)
    app.include_router(mlflow_artifacts.tracking_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(PrincipalMiddleware)
    app.add_middleware(RequestGuard, hosts=allowed_hosts(settings, bind_host), limits=state.limits)
    errors.install(app)  # its middleware outermost: even a guard's failure is in the shape
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the repository while the server runs. At the end, the runs MLflow clients log to
    are flushed and let go, not ended: a client goes on logging after a restart."""
    state: ServerState = app.state.fmforge
    state.repo = Repository.open(state.root)
    watcher = asyncio.create_task(_watch_heartbeats(state))
    with ExitStack() as stack:
        if enabled(state.repo):  # checkpoints signed beside the requests, in their own process
            stack.enter_context(BackgroundCheckpointer(state.repo))
        try:
            yield
        finally:
            watcher.cancel()
            state.mlflow.detach_all()
            state.repo.close()


async def _watch_heartbeats(state: ServerState) -> None:
    every_s = min(5.0, state.heartbeat_timeout_s / 3)
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(
                record_lost_heartbeats, state.repo, timeout_s=state.heartbeat_timeout_s
            )
            # A run no client used for as long: let it go (it stays open; a call takes it up).
            await asyncio.to_thread(state.mlflow.detach_idle, state.heartbeat_timeout_s)
        except FmforgeError as error:  # e.g. a busy database: the next round tries again
            logger.warning("heartbeat watch: %s", error)
