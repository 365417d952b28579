"""Training runs: ``start_run`` and the ``Run`` a training loop logs to.

``run.log`` only appends to in-memory columns under a lock (well under a microsecond per
value). A writer thread wakes every ``flush_interval`` seconds, turns what arrived into one
Parquet chunk in the object store and records one ``MetricsLogged`` event with its digest and a
summary per metric, then runs the anomaly detectors on it. A chunk is durable (fsync) before its
event is, and its event before the next flush starts: after ``kill -9`` everything logged before
the last completed flush is readable and nothing needs repair.

Events, on the stream ``run/<run id>``: ``RunStarted``, ``RunEnvironment`` (captured in the
writer thread so starting stays fast), ``MetricsLogged``, ``SampleLogged``, ``CheckpointLogged``,
``EvalLogged``, ``AnomalyDetected``, ``RunHeartbeat`` (when nothing else was written for a
while), ``RunFinished``.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmforge.errors import FmforgeError, InvalidEvent, RunStopped
from fmforge.ledger import NewEvent
from fmforge.ledger.events import new_event_id
from fmforge.repository import Repository
from fmforge.tracking.chunks import build_chunk, summarize
from fmforge.tracking.detectors import Anomaly, Detector, default_detectors
from fmforge.tracking.environment import capture_environment, flatten
from fmforge.tracking.system import SystemSampler

STREAM_PREFIX = "run/"
HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class AnomalyAction:
    """What happens when a detector fires: call ``callback``, stop the run, or tag the last
    checkpoint logged before the anomaly as ``last-good``. ``detectors``: the detector names
    the actions apply to (default: all); every anomaly is recorded either way."""

    callback: Callable[[Anomaly], None] | None = None
    stop: bool = False
    mark_last_good_checkpoint: bool = False
    detectors: tuple[str, ...] | None = None


class Run:
    def __init__(
        self,
        repo: Repository,
        project: str,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        datasets: Sequence[str] = (),
        base_model: str | None = None,
        seed: int | None = None,
        tags: Sequence[str] = (),
        flush_interval: float = 1.0,
        detectors: Sequence[Detector] | None = None,
        on_anomaly: AnomalyAction | None = None,
        system_interval: float | None = 10.0,
        owns_repo: bool = False,
    ) -> None:
        if not 0 < flush_interval <= 1.0:
            raise InvalidEvent(f"flush_interval must be in (0, 1] seconds, got {flush_interval}")
        self.repo = repo
        self.id = new_event_id()
        self.project = project
        self.name = name or self.id[-12:]
        self.stream = STREAM_PREFIX + self.id
        self.flush_interval = flush_interval
        self.detectors = list(default_detectors() if detectors is None else detectors)
        self.on_anomaly = on_anomaly or AnomalyAction()
        self._owns_repo = owns_repo
        self._lock = threading.Lock()  # guards the columns the loop appends to
        self._flush_lock = threading.Lock()  # one flush at a time: chunks and detectors in order
        self._columns: dict[str, tuple[list[int], list[float], list[int]]] = {}
        self._next_step = 0
        self._started = time.time()
        self._stop_reason: str | None = None
        self._writer_error: BaseException | None = None
        self._checkpoints: list[tuple[int, str, str]] = []  # (step, model, commit)
        self._closing = threading.Event()
        self._system_interval = system_interval
        self._last_log = time.monotonic()
        self._last_write = time.monotonic()
        self.anomalies: list[Anomaly] = []
        config = dict(config or {})
        self.repo.ledger.append(
            self.stream,
            NewEvent(
                "RunStarted",
                {
                    "run": self.id, "project": project, "name": self.name, "config": config,
                    "config_flat": flatten(config), "datasets": list(datasets),
                    "base_model": base_model,
                    "seed": seed if seed is not None else config.get("seed"),
                    "tags": list(tags), "started": self._started,
                },
            ),
            expected_version=0,
        )  # fmt: skip
        self._writer = threading.Thread(
            target=self._write_loop, name=f"fmforge-run-{self.name}", daemon=True
        )
        self._writer.start()

    # ---- the training loop's side ---------------------------------------------------------

    def log(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        *,
        samples: int | None = None,
        tokens: int | None = None,
    ) -> None:
        """Record ``metrics`` (name -> number) at ``step`` (default: one past the last).

        ``samples`` / ``tokens``: how many the step processed; the run adds
        ``throughput/samples_per_second`` / ``throughput/tokens_per_second`` since the last call.
        """
        if self._stop_reason is not None:
            raise RunStopped(self._stop_reason)
        if self._writer_error is not None:
            raise FmforgeError(f"the run's writer failed: {self._writer_error}")
        converted = [(name, float(value)) for name, value in metrics.items()]  # before any append
        if samples is not None or tokens is not None:
            now = time.monotonic()
            elapsed, self._last_log = max(now - self._last_log, 1e-9), now
            for name, count in (("samples", samples), ("tokens", tokens)):
                if count is not None:
                    converted.append((f"throughput/{name}_per_second", count / elapsed))
        self._record(converted, step)

    def log_at(self, metrics: Mapping[str, Any], *, step: int, wall_time: float) -> None:
        """Record values logged elsewhere at ``wall_time`` (seconds since the epoch), for
        importers that keep the original times."""
        converted = [(name, float(value)) for name, value in metrics.items()]
        self._record(converted, step, int(wall_time * 1_000_000))

    def _record(
        self, converted: list[tuple[str, float]], step: int | None, at_us: int | None = None
    ) -> None:
        now_us = int(time.time() * 1_000_000) if at_us is None else at_us
        with self._lock:
            step = self._next_step if step is None else int(step)
            self._next_step = step + 1
            columns = self._columns
            for name, value in converted:
                column = columns.get(name)
                if column is None:
                    if not isinstance(name, str) or not name:
                        raise InvalidEvent(f"metric names are non-empty strings, got {name!r}")
                    column = columns[name] = ([], [], [])
                column[0].append(step)
                column[1].append(value)
                column[2].append(now_us)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add configuration values after the start (flattened keys; later values win)."""
        self._append(NewEvent("ParamsLogged", {"params": flatten(dict(params))}))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Key-value tags (MLflow's kind); ``tags=[...]`` at the start are plain labels."""
        self._append(NewEvent("TagsSet", {"tags": {str(k): str(v) for k, v in tags.items()}}))

    def log_sample(self, step: int, inputs: Any, outputs: Any) -> None:
        """Qualitative outputs (e.g. generated text) at ``step``; JSON values."""
        self._append(NewEvent("SampleLogged", {"step": step, "inputs": inputs, "outputs": outputs}))

    def log_eval(
        self, metrics: Mapping[str, float], *, step: int | None = None, dataset: str | None = None
    ) -> None:
        """Evaluation results at ``step``; a NaN or infinite result is kept as the string
        ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (JSON has no such numbers)."""
        data = {
            "step": self._next_step if step is None else step,
            "metrics": {name: _json_number(value) for name, value in metrics.items()},
            "dataset": dataset,
        }
        self._append(NewEvent("EvalLogged", data))

    def log_checkpoint(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        model: str | None = None,
        step: int | None = None,
        message: str | None = None,
    ) -> str:
        """Commit ``source`` (a model directory or file, or a state dict of torch tensors) to
        the registry on branch ``runs/<run id>`` of ``model`` (default: the project's name);
        returns the commit id."""
        from fmforge.models import commit_model

        model = model or self.project
        step = self._next_step - 1 if step is None else step
        message = message or f"{self.name} step {step}"
        branch = f"runs/{self.id}"
        if isinstance(source, Mapping):
            import tempfile

            import torch

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "pytorch_model.bin"
                torch.save({k: v.detach().cpu().contiguous() for k, v in source.items()}, path)
                result = commit_model(self.repo, model, path.parent, message, branch=branch)
        else:
            result = commit_model(self.repo, model, Path(source), message, branch=branch)
        self._checkpoints.append((step, model, result.commit))
        data = {"step": step, "model": model, "commit": result.commit}
        self._append(NewEvent("CheckpointLogged", data))
        return result.commit

    # ---- the writer thread -----------------------------------------------------------------

    def _append(self, event: NewEvent) -> None:
        self.repo.ledger.append(self.stream, event)
        self._last_write = time.monotonic()

    def _write_loop(self) -> None:
        try:
            self._append(NewEvent("RunEnvironment", capture_environment()))
            sampler = SystemSampler() if self._system_interval else None
            sampled = time.monotonic()
            while not self._closing.wait(self.flush_interval):
                if sampler is not None and time.monotonic() - sampled >= (
                    self._system_interval or 0
                ):
                    sampled = time.monotonic()
                    self._record(list(sampler.sample().items()), max(self._next_step - 1, 0))
                self.flush()
                if time.monotonic() - self._last_write > HEARTBEAT_S:
                    self._append(NewEvent("RunHeartbeat", {"time": time.time()}))
        except BaseException as exc:
            self._writer_error = exc
            traceback.print_exc()

    def flush(self) -> None:
        """Write what was logged since the last flush, now (the writer thread does this every
        ``flush_interval``; a training loop may call it before something risky)."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            columns, self._columns = self._columns, {}
        if not columns:
            return
        data, series = build_chunk(columns)
        digest = self.repo.objects.put(data)
        summary = {
            name: summarize(steps, values).to_json() for name, (steps, values) in series.items()
        }
        self._append(
            NewEvent(
                "MetricsLogged",
                {
                    "chunk": digest,
                    "bytes": len(data),
                    "values": sum(s["count"] for s in summary.values()),
                    "metrics": summary,
                },
                refs=(digest,),
            )
        )
        for name, (steps, values) in series.items():
            for detector in self.detectors:
                if detector.watches(name):
                    for anomaly in detector.check(name, steps, values):
                        self._raise_anomaly(anomaly)

    def _raise_anomaly(self, anomaly: Anomaly) -> None:
        self.anomalies.append(anomaly)
        data = anomaly.to_json()
        action = self.on_anomaly
        if action.detectors is not None and anomaly.detector not in action.detectors:
            self._append(NewEvent("AnomalyDetected", data))
            return
        if action.mark_last_good_checkpoint:
            good = [c for c in self._checkpoints if c[0] < anomaly.step]
            if good:
                from fmforge.models import create_tag

                step, model, commit = good[-1]
                tag = f"last-good/{self.id}"
                create_tag(self.repo, model, tag, commit)
                data["last_good_checkpoint"] = {
                    "model": model,
                    "commit": commit,
                    "step": step,
                    "tag": tag,
                }
        self._append(NewEvent("AnomalyDetected", data))
        if action.callback is not None:
            action.callback(anomaly)
        if action.stop:
            self._stop_reason = (
                f"stopped by {anomaly.detector} on {anomaly.metric} at step {anomaly.step}: "
                f"{anomaly.evidence}"
            )

    # ---- ending ----------------------------------------------------------------------------

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """Flush, stop the writer and record ``RunFinished`` with a summary of every metric."""
        self._closing.set()
        self._writer.join()
        self.flush()
        from fmforge.tracking.reading import run_summary

        data: dict[str, Any] = {
            "status": status, "duration_s": time.time() - self._started,
            "summary": run_summary(self.repo, self.id), "anomalies": len(self.anomalies),
        }  # fmt: skip
        if error:
            data["error"] = error
        self._append(NewEvent("RunFinished", data))
        if self._owns_repo:
            self.repo.close()


@contextmanager
def start_run(project: str, *, repo: Repository | None = None, **options: Any) -> Iterator[Run]:
    """``with start_run("sentiment", config=cfg) as run: run.log({"loss": l}, step=s)``.

    The run finishes as ``failed`` (with the error) when the block raises, ``stopped`` when an
    anomaly action stopped it, else ``finished``. A process killed meanwhile leaves a run that
    the views report as ``crashed`` once its heartbeat is older than the timeout.
    """
    owns = repo is None
    run = Run(repo or Repository.open(), project, owns_repo=owns, **options)
    try:
        yield run
    except RunStopped as exc:
        run.finish("stopped", str(exc))
        raise
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        run.finish("stopped" if run._stop_reason else "finished")


def _json_number(value: float) -> float | str:
    number = float(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
