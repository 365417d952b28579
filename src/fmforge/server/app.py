"""``fmforge ui``: a FastAPI app over one repository.

Endpoints run on the event loop's one thread, so the repository's connections are never used
by two requests at once; runs opened through the MLflow API flush from their own threads.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from fmforge.repository import Repository
from fmforge.server import mlflow_api
from fmforge.tracking.reading import metric_overview
from fmforge.tracking.report import write_report
from fmforge.tracking.views import runs_index


def create_app(root: str | Path) -> FastAPI:
    tracking: mlflow_api.Tracking

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracking.repo = Repository.open(root)
        try:
            yield
        finally:
            for run in list(tracking.active.values()):
                run.finish("stopped", "the server stopped")
            tracking.repo.close()

    app = FastAPI(title="fmforge", lifespan=lifespan)
    tracking = mlflow_api.install(app)

    def repository() -> Repository:
        return tracking.repo

    @app.get("/", response_class=HTMLResponse)
    async def runs_page() -> str:
        rows = "".join(
            f"<tr><td><a href='/runs/{r['id']}'>{html.escape(r['name'])}</a></td>"
            f"<td>{html.escape(r['project'])}</td><td>{r['status']}</td>"
            f"<td>{r['anomalies']}</td></tr>"
            for r in runs_index(repository()).rows()
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>fmforge runs</title></head>"
            "<body><h1>Runs</h1><table><tr><th>run</th><th>project</th><th>status</th>"
            f"<th>anomalies</th></tr>{rows}</table></body></html>"
        )

    @app.get("/api/runs")
    async def runs_table(where: str | None = None) -> list[dict[str, object]]:
        """The runs table (what the dashboard lists), filtered by a runs query."""
        return runs_index(repository()).rows(where)

    @app.get("/api/runs/{run_id}/series")
    async def series(run_id: str, metric: str, width: int = 1000) -> dict[str, object]:
        """One metric at chart resolution: each column's min and max, so spikes stay."""
        steps, values = metric_overview(repository(), run_id, metric, max(1, min(width, 10_000)))
        return {"metric": metric, "steps": steps.tolist(), "values": values.tolist()}

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(run_id: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            return write_report(repository(), run_id, Path(tmp) / "run.html").read_text()

    return app
