"""``fmforge ui``: a FastAPI app over one repository: the dashboard and the JSON it reads.

The dashboard is static (``static/``: HTML, one script, uPlot vendored): no build step, nothing
fetched from elsewhere. Endpoints run on the event loop's one thread, so the repository's
connections are never used by two requests at once; runs opened through the MLflow API flush
from their own threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from fmforge.errors import FmforgeError
from fmforge.models.diff import diff_models
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository
from fmforge.server import mlflow_api
from fmforge.tracking.heartbeat import record_lost_heartbeats
from fmforge.tracking.reading import load_run, metric_overview
from fmforge.tracking.report import write_report
from fmforge.tracking.runs import HEARTBEAT_S
from fmforge.tracking.views import RunsView

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger(__name__)


def create_app(root: str | Path, *, heartbeat_timeout_s: float = 3 * HEARTBEAT_S) -> FastAPI:
    """The app over the repository at ``root``. A few times per ``heartbeat_timeout_s`` it
    records runs silent for longer as ``heartbeat_lost`` anomalies."""
    watch_every_s = min(5.0, heartbeat_timeout_s / 3)
    tracking: mlflow_api.Tracking

    async def watch() -> None:
        while True:
            await asyncio.sleep(watch_every_s)
            try:
                record_lost_heartbeats(tracking.repo, timeout_s=heartbeat_timeout_s)
            except FmforgeError as error:  # e.g. a busy database: the next round tries again
                logger.warning("heartbeat watch: %s", error)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracking.repo = Repository.open(root)
        watcher = asyncio.create_task(watch())
        try:
            yield
        finally:
            watcher.cancel()
            for run in list(tracking.active.values()):
                run.finish("stopped", "the server stopped")
            tracking.repo.close()

    app = FastAPI(title="fmforge", lifespan=lifespan)
    tracking = mlflow_api.install(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def repository() -> Repository:
        return tracking.repo

    # ---- pages: static files; each reads what it shows from the API below -----------------

    @app.get("/", include_in_schema=False)
    async def runs_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/runs/{run_id}", include_in_schema=False)
    async def run_page(run_id: str) -> FileResponse:
        return FileResponse(STATIC / "run.html")

    @app.get("/compare", include_in_schema=False)
    async def compare_page() -> FileResponse:
        return FileResponse(STATIC / "compare.html")

    @app.get("/runs/{run_id}/report.html", include_in_schema=False)
    async def report(run_id: str) -> Response:
        """The run's self-contained HTML report (``fmforge runs report``), for sharing."""
        with tempfile.TemporaryDirectory() as tmp:
            page = write_report(repository(), run_id, Path(tmp) / "run.html").read_text()
        return Response(page, media_type="text/html")

    # ---- the JSON API --------------------------------------------------------------------

    @app.get("/api/runs")
    async def runs_table(where: str | None = None, project: str | None = None) -> Response:
        """The runs table (what the dashboard lists), filtered by a runs query."""
        text = (
            repository()
            .view(RunsView)
            .table_json(where, project=project, heartbeat_timeout_s=heartbeat_timeout_s)
        )
        return Response(text, media_type="application/json")

    @app.get("/api/runs/{run_id}")
    async def run(run_id: str) -> dict[str, Any]:
        """Everything a run's events say: config, lineage, environment, summaries, anomalies,
        checkpoints, evals, samples. Non-finite numbers are sent as the strings NaN/Infinity."""
        record = dataclasses.asdict(
            load_run(repository(), run_id, heartbeat_timeout_s=heartbeat_timeout_s)
        )
        record["chunks"] = len(record["chunks"])
        return _json_safe(record)  # type: ignore[no-any-return]

    @app.get("/api/runs/{run_id}/series")
    async def series(
        run_id: str, metric: str, width: int = 1000, start: float | None = None,
        end: float | None = None,
    ) -> dict[str, object]:  # fmt: skip
        """One metric at chart resolution (each column's min and max, so spikes stay), over
        the steps ``start..end`` when given (a zoomed chart asks again for its range)."""
        steps, values = metric_overview(
            repository(), run_id, metric, max(1, min(width, 10_000)), start=start, end=end
        )
        return {"metric": metric, "steps": steps.tolist(), "values": values.tolist()}

    @app.get("/api/models/{model}/commits/{commit}/changes")
    async def weight_changes(model: str, commit: str, against: str | None = None) -> Any:
        """Per-layer weight change of a commit against ``against`` (default: its first
        parent): the registry's diff, summarised for a chart."""
        repo = repository()
        index = repo.view(ModelRefs)
        info = index.commit(index.resolve(model, commit))
        base = against or (info.parents[0] if info.parents else None)
        if base is None:
            return JSONResponse(
                {"message": f"{model}@{commit[:12]} has no parent; name one with ?against="},
                status_code=400,
            )
        report = diff_models(repo, f"{model}@{base}", f"{model}@{info.commit}", rank=False)
        return _json_safe(
            {
                "model": model, "commit": info.commit, "against": base,
                "counts": report.counts(),
                "layers": [
                    {"layer": s.layer, "relative": s.relative, "l2": math.sqrt(s.l2),
                     "changed": s.changed, "tensors": s.tensors}
                    for s in report.layers
                ],
            }
        )  # fmt: skip

    return app


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: they travel as strings the dashboard understands."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
