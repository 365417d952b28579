"""Reading runs back: metric series from chunks, summaries from the events alone."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from fmforge.errors import RunNotFound
from fmforge.repository import Repository
from fmforge.tracking.chunks import read_series
from fmforge.tracking.environment import flatten
from fmforge.tracking.runs import HEARTBEAT_S, STREAM_PREFIX


@dataclass
class RunRecord:
    """A run as its events tell it."""

    id: str
    project: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    started: float = 0.0
    last_seen: float = 0.0
    duration_s: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    base_model: str | None = None
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    tag_values: dict[str, str] = field(default_factory=dict)  # key-value tags (set_tags)
    end_time: float | None = None


def merge_summaries(summary: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]]) -> None:
    """Fold one chunk's per-metric summaries into a run's (in place)."""
    for name, new in metrics.items():
        old = summary.get(name)
        if old is None:
            summary[name] = dict(new)
            continue
        old["count"] += new["count"]
        old["non_finite"] += new["non_finite"]
        for key, pick in (("min", min), ("max", max)):
            values = [v for v in (old[key], new[key]) if v is not None]
            old[key] = pick(values) if values else None
        if new["last_step"] >= old["last_step"]:
            old["last"], old["last_step"] = new["last"], new["last_step"]


def load_run(
    repo: Repository, run_id: str, *, heartbeat_timeout_s: float = 3 * HEARTBEAT_S
) -> RunRecord:
    record = RunRecord(run_id)
    seen = False
    for event in repo.ledger.read_stream(STREAM_PREFIX + run_id):
        seen = True
        data = event.data
        if not (event.type == "AnomalyDetected" and data["detector"] == "heartbeat_lost"):
            record.last_seen = max(record.last_seen, epoch_seconds(event.time))  # a sign of life
        if event.type == "RunStarted":
            record.project, record.name = data["project"], data["name"]
            record.config, record.started = data["config"], data["started"]
            record.datasets, record.base_model = data["datasets"], data["base_model"]
        elif event.type == "RunEnvironment":
            record.environment = data
        elif event.type == "ParamsLogged":
            record.config = {**flatten(record.config), **data["params"]}
        elif event.type == "TagsSet":
            record.tag_values.update(data["tags"])
        elif event.type == "MetricsLogged":
            record.chunks.append(data["chunk"])
            merge_summaries(record.summary, data["metrics"])
        elif event.type == "AnomalyDetected":
            record.anomalies.append(data)
        elif event.type == "CheckpointLogged":
            record.checkpoints.append(data)
        elif event.type == "EvalLogged":
            record.evals.append(data)
        elif event.type == "SampleLogged":
            record.samples.append(data)
        elif event.type == "RunFinished":
            record.status, record.duration_s = data["status"], data["duration_s"]
            record.end_time = epoch_seconds(event.time)
    if not seen:
        raise RunNotFound(f"no run {run_id!r}")
    if record.status == "running" and time.time() - record.last_seen > heartbeat_timeout_s:
        record.status = "crashed"
    return record


def epoch_seconds(iso: str) -> float:
    """An event's ISO time as seconds since the epoch (0 for none)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else 0.0


def run_summary(repo: Repository, run_id: str) -> dict[str, dict[str, Any]]:
    return load_run(repo, run_id).summary


def read_metric(
    repo: Repository, run_id: str, name: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(steps, values) of metric ``name`` of a run, every value exactly as logged."""
    steps, values = read_metric_with_times(repo, run_id, name)[:2]
    return steps, values


def read_metric_with_times(
    repo: Repository, run_id: str, name: str
) -> tuple[np.ndarray[Any, Any], ...]:
    """(steps, values, times in µs since the epoch) of metric ``name`` of a run."""
    record = load_run(repo, run_id)
    chunks = (repo.objects.get(digest) for digest in record.chunks)
    return read_series(chunks, name, with_times=True)


def downsample(
    steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any], width: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """At most about ``2 * width`` points: per column, the minimum and the maximum, in step
    order (vectorised: columns of equal size, the remainder in one more)."""
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if values.size <= 2 * width:
        return steps, values
    size = values.size // width
    body = values[: size * width].reshape(width, size)
    offsets = np.arange(width) * size
    low, high = offsets + body.argmin(axis=1), offsets + body.argmax(axis=1)
    first, second = np.minimum(low, high), np.maximum(low, high)
    pairs = [first, second]
    if size * width < values.size:
        tail = values[size * width :]
        ends = sorted({size * width + int(tail.argmin()), size * width + int(tail.argmax())})
        pairs = [np.append(first, ends[0]), np.append(second, ends[-1])]
    keep = np.stack(pairs, axis=1).ravel()  # column by column: already in step order
    keep = keep[np.concatenate(([True], keep[1:] != keep[:-1]))]  # a flat column's one point
    return steps[keep], values[keep]


@lru_cache(maxsize=256)
def _chunk_series(repo_objects: Any, digest: str, name: str) -> tuple[np.ndarray[Any, Any], ...]:
    # Chunks never change (content addressed): a decoded series can be kept as long as wanted.
    return read_series([repo_objects.get(digest)], name)


def metric_overview(
    repo: Repository,
    run_id: str,
    name: str,
    width: int = 1000,
    *,
    start: float | None = None,
    end: float | None = None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A metric over steps ``start..end`` (default: all) reduced to about ``2 * width`` points
    keeping each column's min and max (what a chart of that width can show; spikes never
    vanish). Decoded chunks are cached."""
    record = load_run(repo, run_id)
    parts = [_chunk_series(repo.objects, digest, name) for digest in record.chunks]
    steps = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    values = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if start is not None or end is not None:
        inside = (steps >= (-math.inf if start is None else start)) & (
            steps <= (math.inf if end is None else end)
        )
        steps, values = steps[inside], values[inside]
    return downsample(steps, values, width)
