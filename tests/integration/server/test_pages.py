"""The server's runs pages and the JSON the dashboard reads, from a running `fmforge ui`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fmforge.repository import Repository
from fmforge.tracking import start_run


def get(url: str, **params: object) -> str:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(url + query, timeout=30) as response:
        return str(response.read().decode())


def test_runs_table_series_and_report(repo: Repository, server: str) -> None:
    with start_run("p", repo=repo, name="spiky") as run:
        for step in range(30_000):
            run.log({"loss": 50.0 if step == 17_777 else 1.0 + (step % 5) * 0.01}, step=step)
    (row,) = json.loads(get(server + "/api/runs", where="metrics.loss.max > 10"))
    assert row["name"] == "spiky"
    assert json.loads(get(server + "/api/runs", where="metrics.loss.max > 100")) == []
    body = json.loads(get(f"{server}/api/runs/{run.id}/series", metric="loss", width=300))
    assert len(body["steps"]) <= 2 * 300 + 2
    assert 17_777 in body["steps"]  # the one-step spike survives the reduction
    assert max(body["values"]) == 50.0
    assert body["steps"] == sorted(body["steps"])
    assert "/static/app.js" in get(server + "/")  # the pages are static; test_dashboard runs them
    assert "/static/app.js" in get(f"{server}/runs/{run.id}")
    assert "uPlot" in get(server + "/static/vendor/uPlot.iife.min.js")
    assert "<svg" in get(f"{server}/runs/{run.id}/report.html")
    record = json.loads(get(f"{server}/api/runs/{run.id}"))
    assert record["name"] == "spiky"
    assert record["summary"]["loss"]["max"] == 50.0
    zoomed = json.loads(get(f"{server}/api/runs/{run.id}/series", metric="loss", width=300,
                            start=17_000, end=18_000))  # fmt: skip
    assert zoomed["steps"][0] >= 17_000
    assert zoomed["steps"][-1] <= 18_000
    assert 17_777 in zoomed["steps"]
    assert len(zoomed["steps"]) <= 602
    with pytest.raises(urllib.error.HTTPError) as error:
        get(server + "/api/runs", where="lr > 1")
    assert error.value.code == 400
    assert "unknown field 'lr'" in json.loads(error.value.read())["message"]
    error.value.close()
    with pytest.raises(urllib.error.HTTPError) as error:
        get(server + "/api/runs/nope")
    assert error.value.code == 404
    assert "no run 'nope'" in json.loads(error.value.read())["message"]
    error.value.close()


def test_nan_in_a_run_travels_as_a_string(repo: Repository, server: str) -> None:
    with start_run("p", repo=repo, name="nan") as run:
        run.log({"loss": float("nan")}, step=3)
        run.log_eval({"perplexity": float("inf"), "accuracy": float("nan")}, step=3)
    record = json.loads(get(f"{server}/api/runs/{run.id}"))
    (anomaly,) = record["anomalies"]
    assert anomaly["detector"] == "non_finite"
    (evaluation,) = record["evals"]
    assert evaluation["metrics"] == {"perplexity": "Infinity", "accuracy": "NaN"}


@pytest.mark.ui_args("--heartbeat-timeout", "1")
def test_the_server_records_a_run_whose_process_went_silent(repo: Repository, server: str) -> None:
    from fmforge.tracking.events import RunStarted

    started = {"run": "silent-run", "project": "p", "name": "silent", "config": {},
               "config_flat": {}, "datasets": [], "base_model": None, "seed": None, "tags": [],
               "started": time.time()}  # fmt: skip
    repo.record("run/silent-run", RunStarted(started))  # type: ignore[arg-type]  # then nothing
    deadline = time.monotonic() + 20
    record: dict[str, object] = {}
    while time.monotonic() < deadline:
        record = json.loads(get(f"{server}/api/runs/silent-run"))
        if record["anomalies"]:
            break
        time.sleep(0.2)
    (lost,) = record["anomalies"]  # type: ignore[misc]
    assert lost["detector"] == "heartbeat_lost"
    assert record["status"] == "crashed"
    time.sleep(1.5)  # more watch rounds: the same silence is recorded once
    assert len(json.loads(get(f"{server}/api/runs/silent-run"))["anomalies"]) == 1
