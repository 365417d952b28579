"""Runs logged into a real repository: exact values back, kill -9 survival, anomaly actions."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.modelfiles import base_weights, write_model

from fmforge.errors import InvalidMetric
from fmforge.models import ModelRefs, commit_model
from fmforge.repository import Repository
from fmforge.tracking import (
    AnomalyAction,
    NonFinite,
    Run,
    RunStopped,
    load_run,
    read_metric,
    start_run,
)
from fmforge.tracking.heartbeat import record_lost_heartbeats


def test_logged_values_come_back_exactly(repo: Repository) -> None:
    config = {"optim": {"lr": 3e-4, "betas": [0.9, 0.99]}, "seed": 7}
    with start_run("sentiment", repo=repo, name="first", config=config, flush_interval=0.05) as run:
        for step in range(2000):
            run.log({"loss": 1.0 / (step + 1), "lr": 3e-4}, step=step)
            if step % 500 == 499:
                run.flush()  # several chunks
        run.log({"loss": math.nan, "odd": -0.0}, step=2000)
        run.log_eval({"accuracy": 0.91}, dataset="reviews@v1")
        run.log_sample(2000, "great movie", "positive")
    record = load_run(repo, run.id)
    assert record.status == "finished"
    assert record.config == config
    assert len(record.chunks) >= 2
    steps, values = read_metric(repo, run.id, "loss")
    assert steps.tolist() == list(range(2001))
    assert values[:2000].tolist() == [1.0 / (s + 1) for s in range(2000)]  # bit for bit
    assert math.isnan(values[2000])
    odd = read_metric(repo, run.id, "odd")[1]
    assert math.copysign(1.0, odd[0]) == -1.0
    summary = record.summary["loss"]
    assert (summary["count"], summary["min"], summary["max"]) == (2001, 1.0 / 2000, 1.0)
    assert summary["non_finite"] == 1
    assert record.evals[0]["metrics"] == {"accuracy": 0.91}
    assert record.samples[0]["outputs"] == "positive"
    assert record.environment["python"] == sys.version.split()[0]
    assert "numpy" in record.environment["packages"]
    assert [a["detector"] for a in record.anomalies] == ["non_finite"]


def test_bad_input_is_refused_with_its_name(repo: Repository) -> None:
    with start_run("p", repo=repo) as run:
        with pytest.raises(InvalidMetric, match="'loss': 'high' is not a number"):
            run.log({"loss": "high"})
        with pytest.raises(InvalidMetric, match="printable characters"):
            run.log({"": 1.0})
        with pytest.raises(InvalidMetric, match="outside the int64 range"):
            run.log({"loss": 1.0}, step=10**30)
        with pytest.raises(InvalidMetric, match="step must be an integer"):
            run.log({"loss": 1.0}, step=1.5)  # type: ignore[arg-type]
        run.log({"loss": 0.5}, step=3)  # the refused calls left nothing behind
    assert read_metric(repo, run.id, "loss")[0].tolist() == [3]
    with pytest.raises(InvalidMetric, match="flush_interval"):
        start_run("p", repo=repo, flush_interval=5).__enter__()


def test_a_failing_block_marks_the_run_failed(repo: Repository) -> None:
    def train() -> None:
        with start_run("p", repo=repo) as run:
            started.append(run.id)
            run.log({"loss": 1.0})
            _ = 1 / 0

    started: list[str] = []
    with pytest.raises(ZeroDivisionError):
        train()
    (run_id,) = started
    record = load_run(repo, run_id)
    assert record.status == "failed"
    assert record.summary["loss"]["last"] == 1.0


def test_a_stop_action_raises_in_the_training_loop(repo: Repository, tmp_path: Path) -> None:
    seen = []
    action = AnomalyAction(callback=seen.append, stop=True, mark_last_good_checkpoint=True)
    started: list[str] = []

    def train() -> None:
        with start_run("p", repo=repo, flush_interval=0.05, on_anomaly=action) as run:
            started.append(run.id)
            for step in range(10_000):
                if step == 20:
                    run.log_checkpoint(write_model(tmp_path / "ckpt", base_weights()), model="tiny")
                run.log({"loss": math.nan if step == 30 else 1.0}, step=step)
                time.sleep(0.001)

    with pytest.raises(RunStopped, match="non_finite on loss at step 30"):
        train()
    (run_id,) = started
    assert [a.step for a in seen] == [30]
    record = load_run(repo, run_id)
    assert record.status == "stopped"
    (anomaly,) = record.anomalies
    tag = anomaly["last_good_checkpoint"]["tag"]
    index = repo.view(ModelRefs)
    assert index.resolve("tiny", tag) == record.checkpoints[0]["commit"]
    assert index.branches("tiny") == {f"runs/{run_id}": record.checkpoints[0]["commit"]}


_TRAIN = textwrap.dedent(
    """
    import sys, time
    from fmforge.repository import Repository
    from fmforge.tracking import start_run
    with start_run("p", repo=Repository.open(sys.argv[1]), flush_interval=0.25) as run:
        print(run.id, flush=True)
        step = 0
        while True:
            run.log({"t": time.time(), "loss": 1.0}, step=step)
            step += 1
            time.sleep(0.0005)
    """
)


def test_kill_9_loses_nothing_older_than_the_flush_interval(repo: Repository) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _TRAIN, str(repo.root)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    time.sleep(2.3)
    killed_at = time.time()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with Repository.open(repo.root) as reopened:
        reopened.verify()  # nothing to repair: the chain and every referenced object are intact
        steps, stamps = read_metric(reopened, run_id, "t")
        assert steps.tolist() == list(range(steps.size))  # no gap
        assert stamps[-1] >= killed_at - 1.0  # every step older than the flush interval is there
        assert load_run(reopened, run_id).status == "running"  # within the heartbeat timeout
        time.sleep(0.6)
        assert load_run(reopened, run_id, heartbeat_timeout_s=0.5).status == "crashed"
        # Whoever reads next records the silence, once.
        assert record_lost_heartbeats(reopened, timeout_s=0.5) == [run_id]
        assert record_lost_heartbeats(reopened, timeout_s=0.5) == []
        record = load_run(reopened, run_id, heartbeat_timeout_s=0.5)
        (lost,) = [a for a in record.anomalies if a["detector"] == "heartbeat_lost"]
        assert lost["severity"] == "error"
        assert lost["step"] == steps[-1]
        assert record.status == "crashed"  # the watcher's event is not a sign of life
        with start_run("p", repo=reopened) as after:  # and the repository takes new runs
            after.log({"loss": 0.5})


def test_detectors_can_be_chosen_per_run(repo: Repository) -> None:
    with start_run("p", repo=repo, detectors=[NonFinite(metrics=("acc*",))]) as run:
        run.log({"loss": math.inf, "accuracy": math.nan})
    assert [a["metric"] for a in load_run(repo, run.id).anomalies] == ["accuracy"]


def test_checkpoints_are_commits_on_the_runs_branch(repo: Repository, tmp_path: Path) -> None:
    commit_model(repo, "tiny", write_model(tmp_path / "base", base_weights()), "base")
    with start_run("p", repo=repo, base_model="tiny@main") as run:
        run.log({"loss": 1.0}, step=100)
        commit = run.log_checkpoint(write_model(tmp_path / "c", base_weights(1)), model="tiny")
    record = load_run(repo, run.id)
    assert record.base_model == "tiny@main"
    assert record.checkpoints == [{"step": 100, "model": "tiny", "commit": commit}]
    assert repo.view(ModelRefs).branches("tiny")[f"runs/{run.id}"] == commit


def test_system_metrics_and_throughput_are_recorded(repo: Repository) -> None:
    with start_run("p", repo=repo, flush_interval=0.05, system_interval=0.05) as run:
        deadline = time.monotonic() + 30
        step = 0
        # until the writer (busy capturing the environment first) has sampled twice
        while time.monotonic() < deadline and _samples(run) < 2:
            run.log({"loss": 1.0}, step=step, samples=32, tokens=32 * 128)
            step += 1
            time.sleep(0.01)
    summary = load_run(repo, run.id).summary
    assert summary["system/rss_mb"]["min"] > 10  # this process holds numpy and pyarrow
    assert summary["system/cpu_percent"]["count"] >= 2
    rate = summary["throughput/samples_per_second"]
    assert 32 / 0.5 < rate["last"] < 32 / 0.005  # about 32 per 10 ms step
    assert summary["throughput/tokens_per_second"]["last"] == pytest.approx(rate["last"] * 128)


def test_actions_can_apply_to_some_detectors_only(repo: Repository) -> None:
    action = AnomalyAction(stop=True, detectors=("non_finite",))
    with start_run("p", repo=repo, on_anomaly=action) as run:
        for step in range(100):
            run.log({"loss": 100.0 if step == 60 else 1.0 + 0.01 * (step % 3)}, step=step)
    record = load_run(repo, run.id)
    assert record.status == "finished"  # the spike was recorded, and did not stop the run
    assert [a["detector"] for a in record.anomalies] == ["loss_spike"]


def _samples(run: Run) -> int:
    """System samples the run has recorded so far: flushed, and still in its buffer."""
    flushed = load_run(run.repo, run.id).summary.get("system/cpu_percent", {}).get("count", 0)
    with run._lock:
        pending = len(run._columns.get("system/cpu_percent", ([], [], []))[0])
    return int(flushed) + pending


def test_a_state_dict_checkpoint_is_a_commit(repo: Repository, tmp_path: Path) -> None:
    import torch

    from fmforge.models import load_state_dict

    module = torch.nn.Linear(4, 2)
    with start_run("p", repo=repo) as run:
        run.log({"loss": 1.0}, step=7)
        commit = run.log_checkpoint(module.state_dict(), model="head")
    state = load_state_dict(f"head@{commit}", repo=repo)
    assert torch.equal(state["weight"], module.weight.detach())
    assert load_run(repo, run.id).checkpoints[0]["step"] == 7


def test_charts_of_a_real_run_equal_the_charts_of_every_value(repo: Repository) -> None:
    """A run's writer keeps its summary pyramid; charts read from it (mid-run, with open
    blocks, and finished) equal ``downsample`` of every value: steps going back after a
    restart, repeated, NaN and Inf included. Rebuilding the read model gives the same rows."""
    from fmforge.tracking.overview import downsample, metric_overview
    from fmforge.tracking.views import RunsView

    run = Run(repo, "p", detectors=[], system_interval=None)
    step = 0
    for flush in range(150):
        for i in range(20):
            value = math.nan if (flush, i) == (90, 3) else math.sin(step / 50) + (flush == 120)
            run.log({"loss": value, "inf": math.inf if i == 6 else float(i)}, step=step)
            step += 1 if i != 2 else 0  # a repeated step
        if flush == 100:
            step -= 300  # resumed from an earlier checkpoint
        run.flush()
        if flush in (70, 149):
            steps, values = read_metric(repo, run.id, "loss")
            for width, start, end in (
                (1000, None, None), (40, None, None), (64, 200, 330), (1000, 200, 330)
            ):  # fmt: skip
                got = metric_overview(repo, run.id, "loss", width, start=start, end=end)
                want = downsample(steps, values, width, start=start, end=end)
                assert got[0].tolist() == want[0].tolist()
                assert got[1].tolist() == want[1].tolist()
    run.finish()
    (series,) = (
        repo.view(RunsView)
        .db.execute("SELECT k0 FROM metric_series WHERE run_id = ? AND metric = 'loss'", (run.id,))
        .fetchone()
    )
    assert series == 2  # 19 steps a flush: blocks of 4 steps
    assert repo.views.verify([RunsView]) == []
