"""What MLflow's tracking API means in fmforge's terms: experiments are projects, MLflow runs are
fmforge runs, params join a run's config, metrics go through ``Run.log``.

The routes (``routers/mlflow.py``) hand this store validated request bodies
(``mlflow_schemas``); it answers in MLflow's JSON. Runs opened through the API stay open here
until the client ends them or the server stops; a read of a run flushes it first, so what was
logged is what is read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fmforge.errors import ExperimentExists, ExperimentNotFound, QueryError, RunNotFound
from fmforge.repository import Repository
from fmforge.server.errors import show
from fmforge.server.mlflow_schemas import Metric, Param, Tag
from fmforge.tracking.events import ExperimentCreated
from fmforge.tracking.reading import load_run, read_metric_with_times
from fmforge.tracking.runs import Run
from fmforge.tracking.views import ExperimentsView, RunsView

_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
           "crashed": "FAILED", "stopped": "KILLED"}  # fmt: skip
_FROM_MLFLOW = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "stopped"}
_EXPERIMENTS = "experiment/"
RUN_NAME_TAG = "mlflow.runName"


class MlflowStore:
    """Experiments, and the runs MLflow clients have open here, by id."""

    def __init__(self, repository: Callable[[], Repository]) -> None:
        self._repository = repository
        self.active: dict[str, Run] = {}
        self.lock = threading.Lock()

    @property
    def repo(self) -> Repository:
        return self._repository()

    # ---- experiments ---------------------------------------------------------------------

    def experiments(self) -> dict[str, str]:
        """id -> name, ``0`` being MLflow's ``Default``."""
        return self.repo.view(ExperimentsView)

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        name = self.experiments().get(experiment_id)
        if name is None:
            raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
        return {"experiment_id": experiment_id, "name": name, "artifact_location": "",
                "lifecycle_stage": "active", "tags": []}  # fmt: skip

    def experiment_by_name(self, name: str) -> dict[str, Any]:
        for experiment_id, known in self.experiments().items():
            if known == name:
                return self.experiment(experiment_id)
        raise ExperimentNotFound(f"no experiment named {name!r}")

    def create_experiment(self, name: str) -> str:
        experiments = self.experiments()
        if name in experiments.values():
            raise ExperimentExists(f"experiment {name!r} exists already")
        experiment_id = str(len(experiments))
        self.repo.record(
            _EXPERIMENTS + experiment_id,
            ExperimentCreated({"experiment_id": experiment_id, "name": name}),
            expected_version=0,
        )
        return experiment_id

    # ---- runs ----------------------------------------------------------------------------

    def start_run(self, experiment_id: str, name: str | None, tags: Sequence[Tag]) -> Run:
        project = self.experiment(experiment_id)["name"]
        values = {tag.key: tag.value for tag in tags}
        name = name or values.get(RUN_NAME_TAG)
        run = Run(self.repo, project, name=name, detectors=None, system_interval=None)
        values.pop(RUN_NAME_TAG, None)
        if values:
            run.set_tags(values)
        with self.lock:
            self.active[run.id] = run
        return run

    def open_run(self, run_id: str) -> Run:
        run = self.active.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id!r} is not open here (start it through this server)")
        return run

    def end_run(self, run_id: str, status: str | None) -> None:
        if status not in _FROM_MLFLOW:
            return
        with self.lock:
            run = self.active.pop(run_id, None)
        if run is not None:
            run.finish(_FROM_MLFLOW[status])

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[Tag] = (),
    ) -> None:
        """Record a validated batch: params, then tags, then metrics grouped by step."""
        run = self.open_run(run_id)
        if params:
            run.log_params({p.key: p.value for p in params})
        if tags:
            run.set_tags({t.key: t.value for t in tags})
        by_step: dict[int, dict[str, float]] = {}
        for metric in metrics:
            by_step.setdefault(metric.step, {})[metric.key] = metric.value
        for step, values in sorted(by_step.items()):
            run.log(values, step=step)

    def finish_all(self) -> None:
        with self.lock:
            runs, self.active = list(self.active.values()), {}
        for run in runs:
            run.finish("stopped", "the server stopped")

    # ---- reading -------------------------------------------------------------------------

    def run_json(self, run_id: str) -> dict[str, Any]:
        if run_id in self.active:
            self.active[run_id].flush()
        record = load_run(self.repo, run_id)  # RunNotFound: 404
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
        tags.append({"key": RUN_NAME_TAG, "value": record.name})
        return {"info": info, "data": {"metrics": metrics, "params": params, "tags": tags}}

    def search(
        self, experiment_ids: Sequence[str], filter_string: str | None, max_results: int
    ) -> list[dict[str, Any]]:
        for run in list(self.active.values()):
            run.flush()
        experiments = self.experiments()
        projects = {experiments.get(e) for e in experiment_ids}
        where = translate_filter(filter_string) if filter_string else None
        try:
            found = self.repo.view(RunsView).rows(where, strict_metrics=False)  # as MLflow
        except QueryError as exc:  # it names the translated query: name the filter too
            raise QueryError(f"filter {show(filter_string, 80)}: {exc}") from None
        rows = [r for r in found if not projects or r["project"] in projects]
        return [self.run_json(r["id"]) for r in rows[:max_results]]

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        self.run_json(run_id)  # flushes an open run, 404s an unknown one
        steps, values, times = read_metric_with_times(self.repo, run_id, key)
        return [
            {"key": key, "value": v, "timestamp": t // 1000, "step": s}
            for s, v, t in zip(steps.tolist(), values.tolist(), times.tolist(), strict=True)
        ]


def translate_filter(text: str) -> str:
    """MLflow's ``metrics.acc > 0.9 and params.lr = '0.1'`` in the runs query language."""
    text = re.sub(r"\bparams\.(\w[\w.\-]*)", r"config.\1", text)
    text = re.sub(r"\bmetrics\.(\w[\w.\-/]*)", r"metrics.\1.last", text)
    text = re.sub(r"\battributes\.status\b", "status", text)
    text = re.sub(
        r"\b(status\s*!?=\s*)(['\"])(RUNNING|FINISHED|FAILED|KILLED)\2",
        lambda m: f"{m[1]}{m[2]}{_FROM_MLFLOW.get(m[3], m[3].lower())}{m[2]}",
        text,
    )
    text = re.sub(r"\battributes\.run_name\b|\btags\.`?mlflow\.runName`?", "name", text)
    return re.sub(r"\s+AND\s+", " and ", text, flags=re.IGNORECASE)
