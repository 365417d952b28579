"""Training runs: ``start_run`` and the ``Run`` a training loop logs to.

``run.log`` checks its values, then appends them to in-memory typed columns (``array``: 24
bytes a value) under a lock, about a microsecond per value. A writer thread turns what arrived
into one Parquet chunk in the object store, folds it into the run's summary pyramid (the
min/max blocks charts read, one small object per flush), and records one ``MetricsLogged``
event with both digests and a summary per metric, then runs the anomaly detectors on it. It
flushes by age and by size:

- **age**: the oldest value waiting is written within ``flush_interval`` (at most 1 s) of being
  logged: the writer wakes when the first value arrives and flushes just before that deadline,
  leaving room for the flush itself;
- **size**: past ``FLUSH_SOON`` waiting values, ``log`` seals them as a batch and hands it
  to the writer (the loop does it: a writer starved of the GIL would wait for the columns'
  lock behind a hot loop); past ``max_buffer_bytes`` in all, or when the oldest value waiting
  is overdue, ``log`` itself flushes before it returns (back-pressure): a loop logging faster
  than the disk can keep up slows down to its pace instead of growing memory without bound or
  keeping values in memory past their deadline.

A chunk is durable (fsync) before its event is, and its event before the next flush starts:
after ``kill -9`` everything logged more than ``flush_interval`` ago is readable and nothing
needs repair. Every event goes through the repository's write path as the principal that
started the run.

Events, on the stream ``run/<run id>`` (declared in ``fmforge.tracking.events``):
``RunStarted``, ``RunEnvironment`` (captured in the writer thread so starting stays fast),
``MetricsLogged``, ``SampleLogged``, ``CheckpointLogged``, ``EvalLogged``, ``AnomalyDetected``,
``RunHeartbeat`` (when nothing else was written for a while), ``RunFinished``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import FmforgeError, InvalidMetric, RunStopped, UsageError
from fmforge.ledger import NewEvent
from fmforge.ledger.events import new_event_id
from fmforge.repository import Repository
from fmforge.tracking import events as ev
from fmforge.tracking.chunks import build_chunk, summarize
from fmforge.tracking.detectors import Anomaly, Detector, default_detectors
from fmforge.tracking.environment import capture_environment, flatten
from fmforge.tracking.pyramid import PyramidBuilder
from fmforge.tracking.system import SystemSampler
from fmforge.tracking.values import (
    INT64,
    check_name,
    check_number,
    check_step,
    json_number,
    resolve_base,
)
from fmforge.tracking.values import unique_name as unique_run_name
from fmforge.tracking.views import HEARTBEAT_S, RunsView

STREAM_PREFIX = "run/"
MAX_BUFFER_BYTES = 64 << 20
FLUSH_SOON = 1 << 18  # waiting values past which the writer flushes without waiting
_VALUE_BYTES = 24  # step, value and time: 8 bytes each

logger = logging.getLogger(__name__)

__all__ = ["HEARTBEAT_S", "STREAM_PREFIX", "AnomalyAction", "Run", "RunStopped", "start_run"]


@dataclass(frozen=True)
class AnomalyAction:
    """What happens when a detector fires: call ``callback``, stop the run, or tag the last
    checkpoint logged before the anomaly as ``last-good``. ``detectors``: the detector names
    the actions apply to (default: all); every anomaly is recorded either way."""

    callback: Callable[[Anomaly], None] | None = None
    stop: bool = False
    mark_last_good_checkpoint: bool = False
    detectors: tuple[str, ...] | None = None


Column = tuple["array[int]", "array[float]", "array[int]"]  # steps, values, times (µs)


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
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        detectors: Sequence[Detector] | None = None,
        on_anomaly: AnomalyAction | None = None,
        system_interval: float | None = 10.0,
        owns_repo: bool = False,
        heartbeat: bool = True,
        environment: Mapping[str, Any] | None = None,
        experiment: str | None = None,
        started: float | None = None,
        unique_name: bool = True,
        run_id: str | None = None,
    ) -> None:
        """``heartbeat=False``: write no heartbeats (a server recording a remote client's run
        must not speak for it); ``environment``: the environment to record instead of this
        process's (a remote client's); ``experiment``: the MLflow experiment id it belongs
        to; ``started``: the start time when another clock knows it (seconds);
        ``unique_name=False``: keep ``name`` even when the project has a run of that name
        (MLflow's names need not be unique); ``run_id``: the id to use (an integration that
        must tell it before the run starts; default: a new UUIDv7)."""
        self._setup(repo, flush_interval, max_buffer_bytes, detectors, on_anomaly,
                    system_interval, owns_repo, heartbeat, environment)  # fmt: skip
        self.id = run_id or new_event_id()
        self.project = project
        self.stream = STREAM_PREFIX + self.id
        self._started = time.time() if started is None else started
        self.base_model, self.base_commit = resolve_base(repo, base_model)
        config = dict(config or {})
        wanted = name or self.id[-12:]
        self.name = unique_run_name(repo, project, wanted) if unique_name else wanted
        data: dict[str, Any] = {
            "run": self.id, "project": project, "name": self.name, "config": config,
            "config_flat": flatten(config), "datasets": list(datasets), "base_model": base_model,
            "seed": seed if seed is not None else config.get("seed"), "tags": list(tags),
            "started": self._started,
        }  # fmt: skip
        if experiment is not None:
            data["experiment"] = experiment
        self._append(ev.RunStarted(data), expected_version=0)  # type: ignore[arg-type]
        self._start_writer()

    def _setup(
        self,
        repo: Repository,
        flush_interval: float,
        max_buffer_bytes: int,
        detectors: Sequence[Detector] | None,
        on_anomaly: AnomalyAction | None,
        system_interval: float | None,
        owns_repo: bool,
        heartbeat: bool,
        environment: Mapping[str, Any] | None,
    ) -> None:
        if not 0 < flush_interval <= 1.0:
            raise InvalidMetric(f"flush_interval must be in (0, 1] seconds, got {flush_interval}")
        if max_buffer_bytes < 1 << 16:
            raise InvalidMetric(f"max_buffer_bytes must be >= 65536, got {max_buffer_bytes}")
        self.repo = repo
        self.actor = repo.principal  # every event of the run is recorded as its starter's
        self.flush_interval = flush_interval
        self.max_buffered = max_buffer_bytes // _VALUE_BYTES
        self.detectors = list(default_detectors() if detectors is None else detectors)
        self.on_anomaly = on_anomaly or AnomalyAction()
        self._owns_repo = owns_repo
        self._heartbeat = heartbeat
        self._environment = None if environment is None else dict(environment)
        self._lock = threading.Lock()  # guards the columns the loop appends to
        self._flush_lock = threading.Lock()  # one flush at a time: chunks and detectors in order
        self._columns: dict[str, Column] = {}
        # The summaries charts read (fmforge.tracking.pyramid); None for a resumed run, whose
        # open blocks another writer held: its later chunks are read as they are.
        self._pyramid: PyramidBuilder | None = PyramidBuilder()
        self._buffered = 0  # values in the open columns
        self._first_at = 0.0  # monotonic time of the oldest value in the open columns
        # Sealed batches waiting for the writer: (columns, values, first value's time).
        self._sealed: collections.deque[tuple[dict[str, Column], int, float]] = collections.deque()
        self._sealed_values = 0
        self._sealed_lock = threading.Lock()  # the deque's bookkeeping (not the hot columns)
        self._wake = threading.Event()
        self._next_step = 0
        self._stop_reason: str | None = None
        self._writer_error: BaseException | None = None
        self._checkpoints: list[tuple[int, str, str]] = []  # (step, model, commit)
        self._closing = threading.Event()
        self._ended = False
        self._system_interval = system_interval
        self._last_log = time.monotonic()
        self._last_write = time.monotonic()
        # Seconds recent flushes took (the largest, decaying): leaves room before a deadline.
        self._flush_cost = 0.05
        self.anomalies: list[Anomaly] = []

    def _start_writer(self) -> None:
        self._writer = threading.Thread(
            target=self._write_loop, name=f"fmforge-run-{self.name}", daemon=True
        )
        self._writer.start()

    @classmethod
    def resume(
        cls,
        repo: Repository,
        run_id: str,
        *,
        reopen: bool = True,
        flush_interval: float = 1.0,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        detectors: Sequence[Detector] | None = None,
        on_anomaly: AnomalyAction | None = None,
        system_interval: float | None = 10.0,
        owns_repo: bool = False,
        heartbeat: bool = True,
        environment: Mapping[str, Any] | None = None,
    ) -> Run:
        """Go on logging to the existing run ``run_id`` (from another process, after a
        restart). ``reopen``: an ended run is recorded as running again (``RunResumed``);
        without it the run's status stays as it is (MLflow lets a client log to a finished
        run). Steps go on after the last one logged."""
        record = repo.view(RunsView).run(run_id)  # RunNotFound
        run = cls.__new__(cls)
        run._setup(repo, flush_interval, max_buffer_bytes, detectors, on_anomaly,
                   system_interval, owns_repo, heartbeat, environment)  # fmt: skip
        run._environment = {} if environment is None else run._environment  # recorded before
        run.id, run.project, run.name = record.id, record.project, record.name
        run.stream = STREAM_PREFIX + run.id
        run._started = record.started
        run._pyramid = None
        run.base_model, run.base_commit = resolve_base(repo, record.base_model)
        steps = [s["last_step"] for s in record.summary.values()]
        run._next_step = max(steps) + 1 if steps and max(steps) < INT64[1] else 0
        if reopen and record.status not in ("running", "crashed"):
            run._append(ev.RunResumed({"time": time.time()}))
        run._start_writer()
        return run

    # ---- ending and the context manager ---------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: Any) -> None:  # fmt: skip
        """Finish as ``failed`` (with the error) when the block raised, ``stopped`` when an
        anomaly action stopped the run, else ``finished``."""
        if self._ended:
            return
        if isinstance(error, RunStopped):
            self.finish("stopped", str(error))
        elif error is not None:
            self.finish("failed", f"{type(error).__name__}: {error}")
        else:
            self.finish("stopped" if self._stop_reason else "finished")

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
        A value that is not a number or a step outside int64 raises ``InvalidMetric`` and
        nothing of the call is recorded.
        """
        if self._stop_reason is not None:
            raise RunStopped(self._stop_reason)
        if self._writer_error is not None:
            raise FmforgeError(f"the run's writer failed: {self._writer_error}")
        converted = [(name, check_number(name, value)) for name, value in metrics.items()]
        if samples is not None or tokens is not None:
            now = time.monotonic()
            elapsed, self._last_log = max(now - self._last_log, 1e-9), now
            for name, count in (("samples", samples), ("tokens", tokens)):
                if count is not None:
                    converted.append((f"throughput/{name}_per_second", count / elapsed))
        self._record(converted, None if step is None else check_step(step))

    def log_at(self, metrics: Mapping[str, Any], *, step: int, wall_time: float) -> None:
        """Record values logged elsewhere at ``wall_time`` (seconds since the epoch), for
        importers that keep the original times."""
        converted = [(name, check_number(name, value)) for name, value in metrics.items()]
        at = check_number("wall_time", wall_time)
        if not math.isfinite(at) or not 0 <= at < 2**62 / 1e6:
            raise InvalidMetric(f"wall_time {wall_time!r} is not a time")
        self._record(converted, check_step(step), int(at * 1_000_000))

    def _record(
        self, converted: list[tuple[str, float]], step: int | None, at_us: int | None = None
    ) -> None:
        now_us = int(time.time() * 1_000_000) if at_us is None else at_us
        with self._lock:
            step = self._next_step if step is None else step
            columns = self._columns
            for name, _ in converted:  # every name checked before anything is appended
                if name not in columns:
                    check_name(name)
            self._next_step = step + 1 if step < INT64[1] else step
            for name, value in converted:
                column = columns.get(name)
                if column is None:
                    column = columns[name] = (array("q"), array("d"), array("q"))
                column[0].append(step)
                column[1].append(value)
                column[2].append(now_us)
            before = self._buffered
            now = time.monotonic()
            if not before and converted:
                self._first_at = now
                self._wake.set()
            self._buffered = waiting = before + len(converted)
            if waiting >= FLUSH_SOON:  # seal the batch for the writer
                with self._sealed_lock:
                    self._sealed.append((columns, waiting, self._first_at))
                    self._sealed_values += waiting
                self._columns, self._buffered, waiting = {}, 0, 0
                self._wake.set()
            oldest = self._sealed[0][2] if self._sealed else (self._first_at if waiting else now)
            # A flush the loop makes blocks it, so the newest durable value is older than
            # the oldest waiting one by the previous flush's length, and this flush adds its
            # own: start early enough for both to end within the interval.
            slack = max(self.flush_interval * 0.9 - 2 * self._flush_cost, self.flush_interval / 4)
            overdue = now - oldest > slack
            full = waiting + self._sealed_values >= self.max_buffered
        if full or overdue:
            # Back-pressure: the loop pays for the flush it made necessary, after waiting for
            # the writer's own (a starved writer finishes once the loop stops holding the GIL).
            self.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add configuration values after the start (flattened keys; later values win)."""
        self._append(ev.ParamsLogged({"params": flatten(dict(params))}))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Key-value tags (MLflow's kind); ``tags=[...]`` at the start are plain labels."""
        self._append(ev.TagsSet({"tags": {str(k): str(v) for k, v in tags.items()}}))

    def log_sample(self, step: int, inputs: Any, outputs: Any) -> None:
        """Qualitative outputs (e.g. generated text) at ``step``; JSON values."""
        self._append(
            ev.SampleLogged({"step": check_step(step), "inputs": inputs, "outputs": outputs})
        )

    def log_eval(
        self, metrics: Mapping[str, float], *, step: int | None = None, dataset: str | None = None
    ) -> None:
        """Evaluation results at ``step``; a NaN or infinite result is kept as the string
        ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (JSON has no such numbers)."""
        values = {name: json_number(check_number(name, value)) for name, value in metrics.items()}
        for name in values:
            check_name(name)
        data = {
            "step": self._next_step if step is None else check_step(step),
            "metrics": values,
            "dataset": dataset,
        }
        self._append(ev.EvalLogged(data))  # type: ignore[arg-type]

    def log_checkpoint(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        model: str | None = None,
        step: int | None = None,
        message: str | None = None,
        parents: Sequence[str] | None = None,
        base: str | None = None,
    ) -> str:
        """Commit ``source`` (a model directory or file, or a state dict of tensors) on branch
        ``runs/<run id>`` of the run's base model (``model`` overrides; without either, the
        project's name), the first checkpoint parented on the base commit the run started
        from (``parents``: these REFs instead, e.g. the checkpoint a resumed run went on
        from); returns the commit id. ``base``: ``NAME@REF`` of the model an adapter
        checkpoint adapts."""
        from fmforge.models import commit_model, commit_tensors
        from fmforge.models.refs import ModelRefs

        model = model or (self.base_model or self.project)
        step = self._next_step - 1 if step is None else check_step(step)
        message = message or f"{self.name} step {step}"
        branch = f"runs/{self.id}"
        first = branch not in self.repo.view(ModelRefs).branches(model)
        chosen: list[str] | None = None
        if first and parents is not None:
            chosen = list(parents)
        elif first and model == self.base_model and self.base_commit is not None:
            chosen = [self.base_commit]
        provenance = {"run": self.id, "step": step}
        if isinstance(source, Mapping):
            result = commit_tensors(
                self.repo, model, source, parents=chosen, message=message, branch=branch,
                provenance=provenance, base=base,
            )  # fmt: skip
        else:
            result = commit_model(
                self.repo, model, Path(source), message, branch=branch, parents=chosen,
                provenance=provenance, base=base,
            )  # fmt: skip
        self._checkpoints.append((step, model, result.commit))
        self._append(ev.CheckpointLogged({"step": step, "model": model, "commit": result.commit}))
        return result.commit

    def log_artifact(
        self, source: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[str]:
        """Store a file, or every file under a folder, as the run's artifacts (under
        ``artifact_path``, a relative folder); returns the paths stored."""
        from fmforge.tracking.artifacts import store_tree

        stored = store_tree(self.repo, self.stream, Path(source), artifact_path or "",
                            actor=self.actor)  # fmt: skip
        self._last_write = time.monotonic()
        return [file.path for file in stored]

    def log_values(self, values: Sequence[tuple[str, Any, int, int]]) -> None:
        """Record ``(name, value, step, time in µs since the epoch)`` tuples as they are,
        several values of one metric at one step included (MLflow's ``log_batch``)."""
        groups: dict[tuple[int, int], list[tuple[str, float]]] = {}
        for name, value, step, at in values:
            key = (check_step(step), int(at))
            groups.setdefault(key, []).append((name, check_number(name, value)))
        for (step, at), batch in groups.items():  # a name twice in a batch: both values kept
            self._record(batch, step, at)

    def delete_tags(self, keys: Sequence[str]) -> None:
        self._append(ev.TagsDeleted({"keys": [str(k) for k in keys]}))

    # ---- the writer thread -----------------------------------------------------------------

    def _append(self, event: NewEvent, *, expected_version: int | None = None) -> None:
        self.repo.record(self.stream, event, expected_version=expected_version, actor=self.actor)
        self._last_write = time.monotonic()

    def _write_loop(self) -> None:
        try:
            environment = capture_environment() if self._environment is None else self._environment
            if environment:
                self._append(ev.RunEnvironment(environment))  # type: ignore[arg-type]
            sampler = SystemSampler() if self._system_interval else None
            sampled = time.monotonic()
            while not self._closing.is_set():
                self._wait_for_deadline()
                if sampler is not None and time.monotonic() - sampled >= (
                    self._system_interval or 0
                ):
                    sampled = time.monotonic()
                    self._record(list(sampler.sample().items()), max(self._next_step - 1, 0))
                self.flush(open_columns=not self._sealed)
                if self._heartbeat and time.monotonic() - self._last_write > HEARTBEAT_S:
                    self._append(ev.RunHeartbeat({"time": time.time()}))
        except BaseException as exc:
            self._writer_error = exc
            logger.exception("run %s: the writer thread failed", self.id)

    def _wait_for_deadline(self) -> None:
        """Sleep until the oldest waiting value is due, or many are waiting (or, idle, until
        the next tick, for heartbeats and system metrics)."""
        idle_ticked = False
        while not self._closing.is_set():
            if self._sealed:
                return
            waiting = self._buffered
            self._wake.clear()
            if waiting:
                margin = min(max(0.05, 1.5 * self._flush_cost), self.flush_interval / 2)
                due = self._first_at + self.flush_interval - margin - time.monotonic()
                if due <= 0 or self._sealed:
                    return
                self._wake.wait(due)
            elif idle_ticked:
                return
            else:
                idle_ticked = True
                if not self._buffered:
                    self._wake.wait(self.flush_interval)

    def flush(self, *, open_columns: bool = True) -> None:
        """Write what was logged since the last flush, now (the writer thread does this within
        ``flush_interval``; a training loop may call it before something risky). The writer
        passes ``open_columns=False`` while sealed batches wait: it then never takes the
        columns' lock, which a hot loop would keep from it."""
        with self._flush_lock:
            started = time.monotonic()
            self._flush(open_columns)
            self._flush_cost = max(time.monotonic() - started, self._flush_cost * 0.7)

    def _flush(self, open_columns: bool) -> None:
        while True:
            with self._sealed_lock:
                if not self._sealed:
                    break
                columns, values, _ = self._sealed.popleft()
                self._sealed_values -= values
            self._write_chunk(columns)
        if open_columns:
            with self._lock:
                columns, self._columns, self._buffered = self._columns, {}, 0
            if columns:
                self._write_chunk(columns)

    def _write_chunk(self, columns: dict[str, Column]) -> None:
        data, series = build_chunk(columns)
        digest = self.repo.objects.put(data)
        summary = {
            name: summarize(steps, values).to_json() for name, (steps, values) in series.items()
        }
        payload: dict[str, Any] = {
            "chunk": digest, "bytes": len(data),
            "values": sum(s["count"] for s in summary.values()), "metrics": summary,
        }  # fmt: skip
        refs = [digest]
        if self._pyramid is not None:
            payload["pyramid"] = pyramid = self.repo.objects.put(self._pyramid.add(series))
            refs.append(pyramid)
        self._append(ev.MetricsLogged(payload, refs=refs))  # type: ignore[arg-type]
        for name, (steps, values) in series.items():
            times = None
            for detector in self.detectors:
                if not detector.watches(name):
                    continue
                if detector.uses_times:
                    if times is None:
                        times = np.asarray(columns[name][2], dtype=np.float64) / 1e6
                    found = detector.check(name, steps, values, times=times)  # type: ignore[call-arg]
                else:
                    found = detector.check(name, steps, values)
                for anomaly in found:
                    self._raise_anomaly(anomaly)

    def _raise_anomaly(self, anomaly: Anomaly) -> None:
        self.anomalies.append(anomaly)
        data = anomaly.to_json()
        action = self.on_anomaly
        if action.detectors is not None and anomaly.detector not in action.detectors:
            self._append(ev.AnomalyDetected(data))  # type: ignore[arg-type]
            return
        if action.mark_last_good_checkpoint:
            good = [c for c in self._checkpoints if c[0] < anomaly.step]
            if good:
                from fmforge.models import create_tag

                step, model, commit = good[-1]
                tag = f"last-good/{self.id}"
                create_tag(self.repo, model, tag, commit)
                data["last_good_checkpoint"] = {
                    "model": model, "commit": commit, "step": step, "tag": tag,
                }  # fmt: skip
        self._append(ev.AnomalyDetected(data))  # type: ignore[arg-type]
        if action.callback is not None:
            action.callback(anomaly)
        if action.stop:
            self._stop_reason = (
                f"stopped by {anomaly.detector} on {anomaly.metric} at step {anomaly.step}: "
                f"{anomaly.evidence}"
            )

    # ---- ending ----------------------------------------------------------------------------

    def detach(self) -> None:
        """Flush and stop the writer without ending the run (its process goes on elsewhere,
        or a server stops and takes it up again on the client's next call)."""
        if self._ended:
            return
        self._ended = True
        self._closing.set()
        self._wake.set()
        self._writer.join()
        self.flush()
        if self._owns_repo:
            self.repo.close()

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """Flush, stop the writer and record ``RunFinished`` with a summary of every metric
        (a second call does nothing)."""
        if self._ended:
            return
        self._ended = True
        self._closing.set()
        self._wake.set()
        self._writer.join()
        self.flush()
        summary = self.repo.view(RunsView).run(self.id).summary
        data: dict[str, Any] = {
            "status": status, "duration_s": time.time() - self._started,
            "summary": summary, "anomalies": len(self.anomalies),
        }  # fmt: skip
        if error:
            data["error"] = error[:10_000]
        self._append(ev.RunFinished(data))  # type: ignore[arg-type]
        if self._owns_repo:
            self.repo.close()


@mediated(
    "write",
    lambda repo, args: targets.run()(repo, args) if args.get("run_id") is not None else "run",
)
def start_run(
    project: str | None = None,
    *,
    repo: Repository | None = None,
    run_id: str | None = None,
    **options: Any,
) -> Run:
    """A new run of ``project`` (or, with ``run_id``, that run resumed: an ended run is
    running again); usable both ways::

        with start_run("sentiment", config=cfg) as run:      # finished when the block ends
            run.log({"loss": loss}, step=step)

        run = start_run("sentiment", config=cfg)             # a plain object...
        run.log({"loss": loss}, step=step)
        run.finish()                                         # ... finished by hand

    In a ``with`` block the run finishes as ``failed`` (with the error) when the block raises,
    ``stopped`` when an anomaly action stopped it, else ``finished``. A process killed
    meanwhile leaves a run that the views report as ``crashed`` once its heartbeat is older
    than the timeout.
    """
    owns = repo is None
    opened = repo or Repository.open()
    try:
        if run_id is not None:
            resolved = opened.view(RunsView).resolve(run_id)
            return Run.resume(opened, resolved, owns_repo=owns, **options)
        if not project:
            raise UsageError("start_run needs a project (or run_id= to resume a run)")
        return Run(opened, project, owns_repo=owns, **options)
    except BaseException:
        if owns:
            opened.close()
        raise
