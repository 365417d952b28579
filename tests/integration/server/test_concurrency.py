"""A slow read does not hold up the server: charts run off the event loop.

A run written before summary pyramids charts from every chunk (about a second here); while
five such chart requests are in flight, the runs table and MLflow's logging route still
answer at once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import numpy as np

from fmforge.ledger.events import new_event_id
from fmforge.repository import Repository
from fmforge.tracking.chunks import build_chunk, summarize
from fmforge.tracking.events import MetricsLogged, RunStarted


def old_format_run(repo: Repository, chunks: int, per_chunk: int) -> str:
    """A run as fmforge recorded it before pyramids (no ``pyramid`` in ``MetricsLogged``)."""
    run_id = new_event_id()
    events: list[Any] = [RunStarted({
        "run": run_id, "project": "p", "name": "old", "config": {}, "config_flat": {},
        "datasets": [], "base_model": None, "seed": None, "tags": [], "started": time.time(),
    })]  # fmt: skip
    rng = np.random.default_rng(0)
    for c in range(chunks):
        steps = np.arange(c * per_chunk, (c + 1) * per_chunk)
        data, series = build_chunk({"loss": (steps, rng.normal(size=per_chunk), steps)})
        digest = repo.objects.put(data)
        summary = {n: summarize(s, v).to_json() for n, (s, v) in series.items()}
        payload = {"chunk": digest, "bytes": len(data), "values": per_chunk, "metrics": summary}
        events.append(MetricsLogged(payload, refs=(digest,)))  # type: ignore[arg-type]
    repo.record(f"run/{run_id}", events)
    return run_id


def timed(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[float, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    began = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return time.monotonic() - began, answer


def test_runs_and_logging_answer_while_slow_charts_are_in_flight(
    repo: Repository, server: str
) -> None:
    run_id = old_format_run(repo, chunks=300, per_chunk=20_000)
    chart = f"{server}/api/runs/{run_id}/series?metric=loss&width=1000"
    alone, _ = timed("GET", chart)
    assert alone > 0.3, "the chart must be slow for this test to mean anything"
    _, created = timed("POST", f"{server}/api/2.0/mlflow/runs/create", {"experiment_id": "0"})
    mlflow_run = created["run"]["info"]["run_id"]

    stop = threading.Event()
    charts_done: list[float] = []
    errors: list[BaseException] = []

    def load_charts() -> None:
        try:
            while not stop.is_set():
                charts_done.append(timed("GET", chart)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load_charts, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # five charts in flight
    table, logging = [], []
    began = time.monotonic()
    step = 0
    while time.monotonic() - began < 3 * alone or (
        len(charts_done) < 5 and time.monotonic() - began < 120 and not errors
    ):
        table.append(timed("GET", f"{server}/api/runs")[0])
        logging.append(timed("POST", f"{server}/api/2.0/mlflow/runs/log-metric", {
            "run_id": mlflow_run, "key": "loss", "value": 1.0, "timestamp": 0, "step": step,
        })[0])  # fmt: skip
        step += 1
        time.sleep(0.05)
    in_flight = len(charts_done)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert in_flight >= 5
    # Before, each of these waited for the charts ahead of it on the event loop: at least one
    # chart's time each. Off the loop they only share the CPU (2 cores, maybe busy with other
    # work too), so the typical request is far quicker than a chart and none waits for five.
    for name, times in (("table", table), ("logging", logging)):
        ordered = sorted(times)
        assert ordered[len(ordered) // 2] < alone / 3, (name, ordered[-5:], alone)
        assert ordered[-1] < 5 * alone, (name, ordered[-5:], alone)
