"""What MLflow's tracking API means in fmforge's terms: experiments are projects, MLflow runs are
fmforge runs, params join a run's config, metrics go through the run's writer with the client's
timestamps, artifacts are objects named by events (``tracking.artifacts``).

The routes (``routers/mlflow.py``) hand this store validated request bodies
(``mlflow_schemas``); it answers in MLflow's JSON. A run a client logs to is held open here (a
``Run`` writing its chunks) and taken up again from the ledger on the next call after a server
restart (``Run.resume``): the client never notices. The server writes no heartbeats for a
client: a client that dies leaves a run that reads as crashed once it has been silent for the
heartbeat timeout, and an idle run is let go (``detach_idle``) without being ended. A read of a
run flushes it first, so what was logged is what is read.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fmforge.errors import (
    ExperimentExists,
    ExperimentNotFound,
    FmforgeError,
    InvalidRequest,
    ParamChanged,
    RunNotActive,
    RunNotFound,
    StreamVersionConflict,
)
from fmforge.repository import Repository
from fmforge.server.mlflow_schemas import DatasetInput, Metric, Param, Tag
from fmforge.server.mlflow_search import Order, matches, parse_filter, parse_order_by, sort_rows
from fmforge.tracking import events as ev
from fmforge.tracking.environment import flatten
from fmforge.tracking.experiments import Experiment, ExperimentsView
from fmforge.tracking.reading import read_metric_with_times
from fmforge.tracking.runs import Run
from fmforge.tracking.views import DEFAULT_TIMEOUT_S, RunRecord, RunsView

STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
          "crashed": "FAILED", "stopped": "KILLED", "killed": "KILLED"}  # fmt: skip
FROM_MLFLOW = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_EXPERIMENTS = "experiment/"


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def number(value: float | None) -> float | str:
    """A double as protobuf's JSON writes it ("NaN", "Infinity" for the non-finite)."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def key_values(mapping: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in mapping.items()]


def page(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` from an opaque ``token``, and the next page's token."""
    start = 0
    if token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
        except (ValueError, KeyError, TypeError):
            raise InvalidRequest(f"page_token {token[:40]!r} is not one this server gave") from None
    end = start + size
    more = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode()
    return items[start:end], (more if end < len(items) else None)


class MlflowStore:
    """Experiments, and the runs MLflow clients log to here, by id."""

    def __init__(
        self, repository: Callable[[], Repository], heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._repository = repository
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.active: dict[str, Run] = {}
        self._used: dict[str, float] = {}
        self.lock = threading.RLock()

    @property
    def repo(self) -> Repository:
        return self._repository()

    # ---- experiments ---------------------------------------------------------------------

    def experiments(self) -> dict[str, Experiment]:
        """Every experiment by id: recorded ones, ``Default`` and native projects."""
        projects: dict[str, float] = {}
        for project, started in self.repo.view(RunsView).db.execute(
            "SELECT project, min(started) FROM runs WHERE experiment IS NULL GROUP BY project"
        ):
            projects[project] = started
        return self.repo.view(ExperimentsView).with_projects(projects)

    def _experiment(self, experiment_id: str) -> Experiment:
        found = self.experiments().get(experiment_id)
        if found is None:
            raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
        return found

    def experiment_json(self, found: Experiment) -> dict[str, Any]:
        return {
            "experiment_id": found.experiment_id, "name": found.name,
            "artifact_location": f"mlflow-artifacts:/{found.experiment_id}",
            "lifecycle_stage": found.lifecycle, "tags": key_values(found.tags),
            "creation_time": ms(found.created), "last_update_time": ms(found.updated),
        }  # fmt: skip

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return self.experiment_json(self._experiment(experiment_id))

    def experiment_by_name(self, name: str) -> dict[str, Any]:
        for found in self.experiments().values():
            if found.name == name:
                return self.experiment_json(found)
        raise ExperimentNotFound(f"no experiment named {name!r}")

    def create_experiment(self, name: str, tags: Sequence[Tag] = ()) -> str:
        with self.lock:
            if any(e.name == name for e in self.experiments().values()):
                raise ExperimentExists(f"experiment {name!r} exists already")
            data: dict[str, Any] = {"name": name}
            if tags:
                data["tags"] = {t.key: t.value for t in tags}
            return self._record_experiment(data)

    def _record_experiment(self, data: dict[str, Any], experiment_id: str | None = None) -> str:
        for _ in range(100):
            chosen = experiment_id or self.repo.view(ExperimentsView).next_id()
            try:
                self.repo.record(
                    _EXPERIMENTS + chosen,
                    ev.ExperimentCreated({"experiment_id": chosen, **data}),  # type: ignore[typeddict-item]
                    expected_version=0,
                )
            except StreamVersionConflict:
                if experiment_id is not None:
                    return experiment_id  # recorded meanwhile: the same experiment
                continue  # another writer took that id: the next one
            return chosen
        raise ExperimentExists(f"no free experiment id for {data['name']!r}")

    def _recorded(self, experiment_id: str) -> Experiment:
        """The experiment, recorded first when it is a native project (or Default) so that
        a change to it has a stream to go on."""
        found = self._experiment(experiment_id)
        if not found.recorded:
            self._record_experiment({"name": found.name}, experiment_id)
        return found

    def search_experiments(
        self, filter_string: str | None, order_by: Sequence[str], view: str | None,
        max_results: int, token: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        clauses = parse_filter(filter_string)
        stages = _stages(view)
        rows = [e for e in self.experiments().values() if e.lifecycle in stages]

        def lookup(e: Experiment) -> Callable[[str, str], Any]:
            def value(entity: str, key: str) -> Any:
                if entity == "tags":
                    return e.tags.get(key)
                return {"name": e.name, "experiment_id": e.experiment_id,
                        "creation_time": ms(e.created), "last_update_time": ms(e.updated),
                        "lifecycle_stage": e.lifecycle}.get(key)  # fmt: skip

            return value

        rows = [e for e in rows if matches(clauses, lookup(e))]
        orders = parse_order_by(order_by) or [
            Order("attributes", "last_update_time", False),
            Order("attributes", "experiment_id", True),
        ]
        if not order_by:
            rows.sort(key=lambda e: (-(e.updated or 0), e.experiment_id))
        else:
            sort_rows(rows, orders, lookup)
        chosen, more = page(rows, token, max_results)
        answer: dict[str, Any] = {"experiments": [self.experiment_json(e) for e in chosen]}
        if more:
            answer["next_page_token"] = more
        return answer

    def rename_experiment(self, experiment_id: str, name: str) -> None:
        with self.lock:
            if any(e.name == name and e.experiment_id != experiment_id
                   for e in self.experiments().values()):  # fmt: skip
                raise ExperimentExists(f"experiment {name!r} exists already")
            self._recorded(experiment_id)
            self.repo.record(
                _EXPERIMENTS + experiment_id,
                ev.ExperimentRenamed({"experiment_id": experiment_id, "name": name}),
            )

    def set_experiment_lifecycle(self, experiment_id: str, deleted: bool) -> None:
        if experiment_id == "0" and deleted:
            raise InvalidRequest("the Default experiment (id 0) cannot be deleted")
        self._recorded(experiment_id)
        kind = ev.ExperimentDeleted if deleted else ev.ExperimentRestored
        self.repo.record(
            _EXPERIMENTS + experiment_id,
            kind({"experiment_id": experiment_id, "time": time.time()}),
        )

    def tag_experiment(
        self, experiment_id: str, tags: dict[str, str], deleted: Sequence[str] = ()
    ) -> None:
        found = self._recorded(experiment_id)
        missing = [k for k in deleted if k not in found.tags]
        if missing:
            raise ExperimentNotFound(f"experiment {experiment_id!r} has no tag {missing[0]!r}")
        self.repo.record(
            _EXPERIMENTS + experiment_id,
            ev.ExperimentTagsSet(
                {"experiment_id": experiment_id, "tags": tags, "deleted": list(deleted)}
            ),
        )

    # ---- runs ----------------------------------------------------------------------------

    def start_run(
        self, experiment_id: str, name: str | None, tags: Sequence[Tag], *,
        start_time: int | None = None, user_id: str | None = None, host: str | None = None,
    ) -> Run:  # fmt: skip
        found = self._experiment(experiment_id)
        if found.lifecycle != "active":
            raise RunNotActive(f"experiment {experiment_id!r} is deleted; restore it first")
        values = {tag.key: tag.value for tag in tags}
        name = name or values.get(RUN_NAME_TAG)
        values.pop(RUN_NAME_TAG, None)
        if user_id and USER_TAG not in values:
            values[USER_TAG] = user_id
        run = Run(
            self.repo, found.name, name=name, system_interval=None, heartbeat=False,
            environment=_environment(values, host), experiment=experiment_id,
            started=None if start_time is None else start_time / 1000, unique_name=False,
        )  # fmt: skip
        if values:
            run.set_tags(values)
        with self.lock:
            self.active[run.id] = run
            self._used[run.id] = time.monotonic()
        return run

    def open_run(self, run_id: str) -> Run:
        """The run a client logs to: held here, else taken up from the ledger."""
        with self.lock:
            run = self.active.get(run_id)
            if run is None:
                record = self.repo.view(RunsView).run(run_id)  # RunNotFound: 404
                _check_active(record)
                run = Run.resume(
                    self.repo, run_id, reopen=False, system_interval=None, heartbeat=False,
                    environment={},
                )  # fmt: skip
                self.active[run_id] = run
            self._used[run_id] = time.monotonic()
            return run

    def _record(self, run_id: str) -> RunRecord:
        record = self.repo.view(RunsView).run(run_id, heartbeat_timeout_s=self.heartbeat_timeout_s)
        return record

    def update_run(self, run_id: str, status: str | None, name: str | None) -> None:
        record = self._record(run_id)
        if name and name != record.name:
            raise InvalidRequest("renaming a run is not supported by fmforge; start a new run")
        if status == "RUNNING" and record.status not in ("running", "crashed"):
            _check_active(record)
            with self.lock:
                run = self.active.pop(run_id, None)
                if run is not None:
                    run.detach()
                self.active[run_id] = Run.resume(
                    self.repo, run_id, reopen=True, system_interval=None, heartbeat=False,
                    environment={},
                )  # fmt: skip
                self._used[run_id] = time.monotonic()
        elif status in FROM_MLFLOW:
            run = self.open_run(run_id)
            with self.lock:
                self.active.pop(run_id, None)
                self._used.pop(run_id, None)
            run.finish(FROM_MLFLOW[status])

    def set_run_lifecycle(self, run_id: str, deleted: bool) -> None:
        record = self._record(run_id)
        if deleted and record.lifecycle == "deleted":
            return
        kind = ev.RunDeleted if deleted else ev.RunRestored
        self.repo.record("run/" + run_id, kind({"time": time.time()}))
        if deleted:  # let it go: the next call takes it up again, and finds it deleted
            with self.lock:
                run = self.active.pop(run_id, None)
                self._used.pop(run_id, None)
            if run is not None:
                run.detach()

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[Tag] = (),
    ) -> None:
        """Record a validated batch: params (refused when one changes a logged value, as
        MLflow does), then tags, then metrics at their steps and the client's timestamps."""
        run = self.open_run(run_id)
        if params:
            logged = flatten(self._record(run_id).config)
            new: dict[str, str] = {}
            for p in params:
                before = logged.get(p.key, new.get(p.key))
                if before is not None and _param_text(before) != p.value:
                    raise ParamChanged(
                        f"param {p.key!r} of run {run_id} was logged as {_param_text(before)!r};"
                        f" it cannot change to {p.value!r} (MLflow keeps params fixed)"
                    )
                new[p.key] = p.value
            fresh = {k: v for k, v in new.items() if k not in logged}
            if fresh:
                run.log_params(fresh)
        if tags:
            values = {t.key: t.value for t in tags}
            if values.get(RUN_NAME_TAG) == run.name:
                values.pop(RUN_NAME_TAG)
            if values:
                run.set_tags(values)
        if metrics:
            run.log_values([(m.key, m.value, m.step, m.timestamp * 1000) for m in metrics])

    def delete_tag(self, run_id: str, key: str) -> None:
        record = self._record(run_id)
        _check_active(record)
        if key not in record.tag_values:
            raise RunNotFound(f"no tag {key!r} on run {run_id}")
        self.open_run(run_id).delete_tags([key])

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput], models: list[str]) -> None:
        _check_active(self._record(run_id))
        entries = []
        for item in datasets:
            d = item.dataset
            entry: dict[str, Any] = {
                "name": d.name, "digest": d.digest, "source_type": d.source_type,
                "source": d.source, "tags": {t.key: t.value for t in item.tags},
            }  # fmt: skip
            for key in ("schema", "profile"):
                if getattr(d, key):
                    entry[key] = getattr(d, key)
            version = _fmforge_dataset(self.repo, d.name, d.source)
            if version:
                entry["version"] = version
            entries.append(entry)
        data: dict[str, Any] = {"datasets": entries}
        if models:
            data["models"] = models
        self.repo.record("run/" + run_id, ev.InputsLogged(data))  # type: ignore[arg-type]

    def log_outputs(self, run_id: str, models: list[dict[str, Any]]) -> None:
        _check_active(self._record(run_id))
        self.repo.record("run/" + run_id, ev.OutputsLogged({"models": models}))

    def detach_idle(self, idle_s: float) -> list[str]:
        """Let go of runs no client has used for ``idle_s`` (they stay as they are)."""
        now = time.monotonic()
        with self.lock:
            idle = [r for r, used in self._used.items() if now - used > idle_s]
            runs = [self.active.pop(r) for r in idle if r in self.active]
            for r in idle:
                self._used.pop(r, None)
        for run in runs:
            run.detach()
        return idle

    def detach_all(self) -> None:
        """At shutdown: flush every run and let it go, open (a client logging to it goes on
        after the restart)."""
        with self.lock:
            runs, self.active = list(self.active.values()), {}
            self._used.clear()
        for run in runs:
            run.detach()

    def flush(self, run_id: str) -> None:
        run = self.active.get(run_id)
        if run is not None:
            run.flush()

    # ---- reading -------------------------------------------------------------------------

    def experiment_of(self, record: RunRecord, by_name: dict[str, str] | None = None) -> str:
        if record.experiment is not None:
            return record.experiment
        names = by_name if by_name is not None else self._names()
        return names.get(record.project, "0")

    def _names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for found in self.experiments().values():
            for name in (*found.former, found.name):
                names[name] = found.experiment_id
        return names

    def run_json(self, run_id: str, names: dict[str, str] | None = None) -> dict[str, Any]:
        self.flush(run_id)
        record = self._record(run_id)  # RunNotFound: 404
        experiment_id = self.experiment_of(record, names)
        tags = dict(record.tag_values)
        tags[RUN_NAME_TAG] = record.name
        info = {
            "run_id": record.id, "run_uuid": record.id, "run_name": record.name,
            "experiment_id": experiment_id, "user_id": tags.get(USER_TAG, ""),
            "status": STATUS.get(record.status, "RUNNING"),
            "start_time": ms(record.started), "end_time": ms(record.end_time),
            "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{record.id}/artifacts",
            "lifecycle_stage": record.lifecycle,
        }  # fmt: skip
        metrics = [
            {"key": name, "value": number(summary["last"]),
             "timestamp": ms(record.last_seen), "step": summary["last_step"]}
            for name, summary in record.summary.items()
        ]  # fmt: skip
        params = [{"key": k, "value": _param_text(v)} for k, v in flatten(record.config).items()]
        inputs = [
            {"tags": key_values(d.get("tags", {})), "dataset": {
                k: d[k] for k in ("name", "digest", "source_type", "source", "schema", "profile")
                if k in d}}
            for item in record.inputs for d in item["datasets"]
        ]  # fmt: skip
        outputs = [m for item in record.outputs for m in item["models"]]
        return {
            "info": info,
            "data": {"metrics": metrics, "params": params, "tags": key_values(tags)},
            "inputs": {"dataset_inputs": inputs},
            "outputs": {"model_outputs": outputs},
        }

    def search(
        self, experiment_ids: Sequence[str], filter_string: str | None, max_results: int,
        order_by: Sequence[str] = (), view: str | None = None, token: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        clauses = parse_filter(filter_string)
        orders = parse_order_by(order_by)
        for run_id in list(self.active):
            self.flush(run_id)
        names = self._names()
        wanted = set(experiment_ids)
        stages = _stages(view)
        index = self.repo.view(RunsView)
        found = []
        for run_id, project, experiment, lifecycle in index.db.execute(
            "SELECT run_id, project, experiment, lifecycle FROM runs ORDER BY started DESC, run_id"
        ).fetchall():
            experiment_id = experiment if experiment is not None else names.get(project, "0")
            if (wanted and experiment_id not in wanted) or lifecycle not in stages:
                continue
            run = self.run_json(run_id, names)
            if matches(clauses, _run_lookup(run)):
                found.append(run)
        if orders:
            sort_rows(found, orders, _run_lookup)
        chosen, more = page(found, token, max_results)
        answer: dict[str, Any] = {"runs": chosen}
        if more:
            answer["next_page_token"] = more
        return answer

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        self.flush(run_id)
        self._record(run_id)  # 404s an unknown run
        steps, values, times = read_metric_with_times(self.repo, run_id, key)
        return [
            {"key": key, "value": number(v), "timestamp": t // 1000, "step": s}
            for s, v, t in zip(steps.tolist(), values.tolist(), times.tolist(), strict=True)
        ]


def _stages(view: str | None) -> set[str]:
    """MLflow's ViewType (a name or its number) as lifecycle stages."""
    chosen = str(view or "ACTIVE_ONLY").upper()
    return {"ACTIVE_ONLY": {"active"}, "1": {"active"}, "DELETED_ONLY": {"deleted"},
            "2": {"deleted"}, "ALL": {"active", "deleted"}, "3": {"active", "deleted"}
            }.get(chosen, {"active"})  # fmt: skip


def _run_lookup(run: dict[str, Any]) -> Callable[[str, str], Any]:
    data, info = run["data"], run["info"]

    def value(entity: str, key: str) -> Any:
        if entity == "metrics":
            for m in data["metrics"]:
                if m["key"] == key:
                    return m["value"] if isinstance(m["value"], float) else None
            return None
        if entity in ("params", "tags"):
            for item in data[entity]:
                if item["key"] == key:
                    return item["value"]
            return None
        if entity == "datasets":
            values = [d["dataset"].get(key) for d in run["inputs"]["dataset_inputs"]]
            return values[0] if len(values) == 1 else None
        key = {"run_name": "run_name", "name": "run_name", "created": "start_time",
               "Created": "start_time", "id": "run_id"}.get(key, key)  # fmt: skip
        return info.get(key)

    return value


def _check_active(record: RunRecord) -> None:
    if record.lifecycle != "active":
        raise RunNotActive(
            f"run {record.id} is deleted: it must be in the 'active' state (restore it first)"
        )


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def _environment(tags: dict[str, str], host: str | None) -> dict[str, Any]:
    """A remote client's ``mlflow.source.*`` tags as fmforge's run environment."""
    environment: dict[str, Any] = {}
    code = {
        "git_commit": tags.get("mlflow.source.git.commit"),
        "repo_url": tags.get("mlflow.source.git.repoURL"),
        "branch": tags.get("mlflow.source.git.branch"),
        "source_type": tags.get("mlflow.source.type"),
    }
    code = {k: v for k, v in code.items() if v}
    if code:
        environment["code"] = code
    if tags.get("mlflow.source.name"):
        environment["command"] = [tags["mlflow.source.name"]]
        if tags.get("mlflow.project.entryPoint"):
            environment["command"].append(tags["mlflow.project.entryPoint"])
    if host:
        environment["host"] = host
    return environment


def _fmforge_dataset(repo: Repository, *candidates: str) -> str | None:
    """The fmforge dataset version (NAME@vN) an MLflow dataset names, if it names one."""
    from fmforge.data.versions import resolve

    for candidate in candidates:
        text = candidate.removeprefix("fmforge:").strip()
        if not text or len(text) > 300 or "://" in text:
            continue
        try:
            return resolve(repo, text).ref
        except FmforgeError:
            continue
    return None
