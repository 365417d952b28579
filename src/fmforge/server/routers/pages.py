"""The dashboard's pages: static files, each reading what it shows from the JSON API; and a
run's self-contained HTML report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from fmforge.server.state import State
from fmforge.tracking.report import write_report

STATIC = Path(__file__).parents[1] / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def runs_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/runs/{run_id}")
async def run_page(run_id: str) -> FileResponse:
    return FileResponse(STATIC / "run.html")


@router.get("/login")
async def login_page() -> FileResponse:
    """The login form: answered without credentials (it shows nothing of the repository)."""
    return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})


@router.get("/compare")
async def compare_page() -> FileResponse:
    return FileResponse(STATIC / "compare.html")


@router.get("/runs/{run_id}/report.html")
def report(run_id: str, state: State) -> Response:
    """The run's self-contained HTML report (``fmforge runs report``), for sharing (a plain
    ``def``: it reads a chart of every metric, in the thread pool)."""
    with tempfile.TemporaryDirectory() as tmp:
        page = write_report(state.repo, run_id, Path(tmp) / "run.html").read_text()
    return Response(page, media_type="text/html")
