"""The part of MLflow's REST API (``/api/2.0/mlflow/``) that its client needs for tracking.

With ``MLFLOW_TRACKING_URI=http://HOST:PORT`` pointing at ``fmforge ui``, unchanged MLflow code
(``set_experiment``, ``start_run``, ``log_param(s)``, ``set_tag``, ``log_metric(s)``,
``end_run``, ``get_run``, ``search_runs``, ``get_metric_history``) records fmforge runs:
experiments are projects, params join the run's config, metrics go through the same buffer,
chunks and detectors as ``run.log``. A read of a run flushes it first, so what was logged is
what is read. Errors come back as MLflow's ``{"error_code", "message"}``.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from fmforge.errors import FmforgeError
from fmforge.repository import Repository
from fmforge.tracking.events import ExperimentCreated
from fmforge.tracking.reading import RunNotFound, load_run, read_metric_with_times
from fmforge.tracking.runs import Run
from fmforge.tracking.views import ExperimentsView, RunsView

PREFIX = "/api/2.0/mlflow"
_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
           "crashed": "FAILED", "stopped": "KILLED"}  # fmt: skip
_FROM_MLFLOW = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "stopped"}
_EXPERIMENTS = "experiment/"


class MlflowError(FmforgeError):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Tracking:
    """Server-side state: the runs the clients have open, by id."""

    def __init__(self, repo: Repository | None = None) -> None:
        self._repo = repo  # set when the server starts
        self.active: dict[str, Run] = {}
        self.lock = threading.Lock()

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            raise MlflowError("TEMPORARILY_UNAVAILABLE", "the server is starting", 503)
        return self._repo

    @repo.setter
    def repo(self, repo: Repository) -> None:
        self._repo = repo

    # ---- experiments ---------------------------------------------------------------------

    def experiments(self) -> dict[str, str]:
        """id -> name, ``0`` being MLflow's ``Default``."""
        return self.repo.view(ExperimentsView)

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        name = self.experiments().get(experiment_id)
        if name is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"no experiment {experiment_id}", 404)
        return {"experiment_id": experiment_id, "name": name, "artifact_location": "",
                "lifecycle_stage": "active", "tags": []}  # fmt: skip

    def create_experiment(self, name: str) -> str:
        if not name:
            raise MlflowError("INVALID_PARAMETER_VALUE", "an experiment needs a name")
        if name in self.experiments().values():
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"experiment {name!r} exists already")
        experiment_id = str(len(self.experiments()))
        self.repo.record(
            _EXPERIMENTS + experiment_id,
            ExperimentCreated({"experiment_id": experiment_id, "name": name}),
            expected_version=0,
        )
        return experiment_id

    # ---- runs ----------------------------------------------------------------------------

    def run(self, run_id: str) -> Run:
        run = self.active.get(run_id)
        if run is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"run {run_id} is not open here", 404)
        return run

    def run_json(self, run_id: str) -> dict[str, Any]:
        if run_id in self.active:
            self.active[run_id].flush()
        try:
            record = load_run(self.repo, run_id)
        except RunNotFound:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"no run {run_id}", 404) from None
        names = {v: k for k, v in self.experiments().items()}
        info = {
            "run_id": record.id, "run_uuid": record.id, "run_name": record.name,
            "experiment_id": names.get(record.project, "0"), "user_id": "",
            "status": _STATUS.get(record.status, "RUNNING"),
            "start_time": int(record.started * 1000),
            "end_time": int(record.end_time * 1000) if record.end_time else None,
            "artifact_uri": "", "lifecycle_stage": "active",
        }  # fmt: skip
        metrics = [
            {"key": name, "value": summary["last"] if summary["last"] is not None else float("nan"),
             "timestamp": int(record.last_seen * 1000), "step": summary["last_step"]}
            for name, summary in record.summary.items()
        ]  # fmt: skip
        params = [{"key": k, "value": str(v)} for k, v in record.config.items()]
        tags = [{"key": k, "value": v} for k, v in record.tag_values.items()]
        tags.append({"key": "mlflow.runName", "value": record.name})
        return {"info": info, "data": {"metrics": metrics, "params": params, "tags": tags}}


def _translate_filter(text: str) -> str:
    """MLflow's ``metrics.acc > 0.9 and params.lr = '0.1'`` in the runs query language."""
    text = re.sub(r"\bparams\.(\w[\w.\-]*)", r"config.\1", text)
    text = re.sub(r"\bmetrics\.(\w[\w.\-/]*)", r"metrics.\1.last", text)
    text = re.sub(r"\battributes\.status\b", "status", text)
    text = re.sub(r"\battributes\.run_name\b|\btags\.`?mlflow\.runName`?", "name", text)
    return re.sub(r"\s+AND\s+", " and ", text, flags=re.IGNORECASE)


def router(tracking: Tracking) -> APIRouter:
    api = APIRouter(prefix=PREFIX)

    @api.get("/experiments/get-by-name")
    async def get_by_name(experiment_name: str) -> dict[str, Any]:
        for experiment_id, name in tracking.experiments().items():
            if name == experiment_name:
                return {"experiment": tracking.experiment(experiment_id)}
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"no experiment {experiment_name!r}", 404)

    @api.get("/experiments/get")
    async def get_experiment(experiment_id: str) -> dict[str, Any]:
        return {"experiment": tracking.experiment(experiment_id)}

    @api.post("/experiments/create")
    async def create_experiment(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"experiment_id": tracking.create_experiment(body.get("name", ""))}

    @api.post("/runs/create")
    async def create_run(request: Request) -> dict[str, Any]:
        body = await request.json()
        project = tracking.experiment(str(body.get("experiment_id") or "0"))["name"]
        tags = {t["key"]: t["value"] for t in body.get("tags", [])}
        name = body.get("run_name") or tags.get("mlflow.runName")
        run = Run(tracking.repo, project, name=name, detectors=None, system_interval=None)
        if tags:
            run.set_tags({k: v for k, v in tags.items() if k != "mlflow.runName"})
        with tracking.lock:
            tracking.active[run.id] = run
        return {"run": tracking.run_json(run.id)}

    @api.post("/runs/update")
    async def update_run(request: Request) -> dict[str, Any]:
        body = await request.json()
        run_id = body.get("run_id") or body.get("run_uuid")
        status = body.get("status")
        if status in _FROM_MLFLOW:
            with tracking.lock:
                run = tracking.active.pop(run_id, None)
            if run is not None:
                run.finish(_FROM_MLFLOW[status])
        return {"run_info": tracking.run_json(run_id)["info"]}

    def _log_batch(run_id: str, body: dict[str, Any]) -> None:
        run = tracking.run(run_id)
        if body.get("params"):
            run.log_params({p["key"]: p["value"] for p in body["params"]})
        if body.get("tags"):
            run.set_tags({t["key"]: t["value"] for t in body["tags"]})
        by_step: dict[int, dict[str, float]] = {}
        for metric in body.get("metrics", []):
            by_step.setdefault(int(metric.get("step") or 0), {})[metric["key"]] = metric["value"]
        for step, values in sorted(by_step.items()):
            run.log(values, step=step)

    @api.post("/runs/log-batch")
    async def log_batch(request: Request) -> dict[str, Any]:
        body = await request.json()
        _log_batch(body["run_id"], body)
        return {}

    @api.post("/runs/log-metric")
    async def log_metric(request: Request) -> dict[str, Any]:
        body = await request.json()
        _log_batch(body.get("run_id") or body.get("run_uuid"), {"metrics": [body]})
        return {}

    @api.post("/runs/log-parameter")
    async def log_parameter(request: Request) -> dict[str, Any]:
        body = await request.json()
        _log_batch(body.get("run_id") or body.get("run_uuid"), {"params": [body]})
        return {}

    @api.post("/runs/set-tag")
    async def set_tag(request: Request) -> dict[str, Any]:
        body = await request.json()
        _log_batch(body.get("run_id") or body.get("run_uuid"), {"tags": [body]})
        return {}

    @api.get("/runs/get")
    async def get_run(run_id: str) -> dict[str, Any]:
        return {"run": tracking.run_json(run_id)}

    @api.post("/runs/search")
    async def search_runs(request: Request) -> dict[str, Any]:
        body = await request.json()
        for run in list(tracking.active.values()):
            run.flush()
        experiments = tracking.experiments()
        projects = {experiments.get(str(e)) for e in body.get("experiment_ids", [])}
        where = _translate_filter(body["filter"]) if body.get("filter") else None
        rows = [
            r
            for r in tracking.repo.view(RunsView).rows(where)
            if not projects or r["project"] in projects
        ]
        limit = int(body.get("max_results") or 1000)
        return {"runs": [tracking.run_json(r["id"]) for r in rows[:limit]]}

    @api.get("/metrics/get-history")
    async def metric_history(run_id: str, metric_key: str) -> dict[str, Any]:
        tracking.run_json(run_id)  # flushes an open run, 404s an unknown one
        steps, values, times = read_metric_with_times(tracking.repo, run_id, metric_key)
        return {
            "metrics": [
                {"key": metric_key, "value": v, "timestamp": t // 1000, "step": s}
                for s, v, t in zip(steps.tolist(), values.tolist(), times.tolist(), strict=True)
            ]
        }

    return api


def install(app: FastAPI) -> Tracking:
    """Add the API to ``app``; set ``tracking.repo`` when the server starts."""
    tracking = Tracking()
    app.include_router(router(tracking))

    @app.exception_handler(MlflowError)
    async def mlflow_error(request: Request, exc: MlflowError) -> JSONResponse:
        return JSONResponse({"error_code": exc.code, "message": str(exc)}, status_code=exc.status)

    @app.exception_handler(FmforgeError)
    async def fmforge_error(request: Request, exc: FmforgeError) -> JSONResponse:
        # Every endpoint's user errors: a missing thing is 404, anything else a bad request.
        if type(exc).__name__.endswith("NotFound"):
            code, status = "RESOURCE_DOES_NOT_EXIST", 404
        else:
            code, status = "INVALID_PARAMETER_VALUE", 400
        return JSONResponse({"error_code": code, "message": str(exc)}, status_code=status)

    return tracking
