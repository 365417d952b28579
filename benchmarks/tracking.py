"""Metric logging: cost in the training loop, durable end-to-end cost, run start, storage.

    python benchmarks/tracking.py           # 10 runs x 10,000 steps x 5 metrics
    python benchmarks/tracking.py --quick   # 3 runs

Reference, measured in the same run: raw SQLite, the same (run, step, metric, value) rows
buffered in a list and written with one ``executemany`` per run in a durable WAL database
(synchronous=FULL), per value. Where installed, the same workload through the peers: TensorBoard's
``SummaryWriter`` (torch.utils.tensorboard), MLflow with its SQLite store (``pip install mlflow``,
or mlflow-skinny plus sqlalchemy and alembic) and Aim (``pip install aim``); the slow ones log
fewer steps, since the figure is a cost per value. A peer that cannot run here (not installed,
or installed without what it needs, as mlflow-skinny without its SQLite store) is skipped
with a note in the table.

MLflow over HTTP: the same MLflow client code (``mlflow.log_metrics`` once per step, one
``log-batch`` request each) logging through ``fmforge ui`` and through a stock
``mlflow server`` (SQLite store) on this machine, both started as separate processes; the
figure is the client's wall time per logged value, end to end (until ``end_run`` returns).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

METRICS = ("loss", "lr", "grad_norm", "accuracy", "tokens_per_second")


def workload(steps: int, seed: int = 0) -> list[dict[str, float]]:
    """What a training loop logs: noisy loss and gradient norm (full float64 entropy), a
    schedule, an accuracy and a throughput."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (steps, 3)).tolist()
    return [
        {
            "loss": 2.0 * math.exp(-step / 4000) + 0.1 + 0.02 * noise[step][0],
            "lr": 3e-4 * min(1.0, step / 1000),
            "grad_norm": abs(1.0 + 0.2 * noise[step][1]),
            "accuracy": round(min(0.99, step / 10_000 + 0.01 * noise[step][2]), 4),
            "tokens_per_second": float(5000 + step % 13),
        }
        for step in range(steps)
    ]


def raw_sqlite(directory: Path, runs: int, logged: list[dict[str, float]]) -> float:
    """Seconds per value: rows buffered in a list, one executemany per run, durable."""
    db = sqlite3.connect(directory / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE m (run INTEGER, step INTEGER, metric TEXT, value REAL)")
    start = time.perf_counter()
    for run in range(runs):
        rows = []
        for step, values in enumerate(logged):
            for name, value in values.items():
                rows.append((run, step, name, value))
        db.execute("BEGIN")
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed / (runs * len(logged) * len(METRICS))


def peers(directory: Path, logged: list[dict[str, float]]) -> dict[str, tuple[float, float] | str]:
    """(in-loop, end-to-end) seconds per value of each peer, or why it was not measured."""
    out: dict[str, tuple[float, float] | str] = {}
    for name, measure, steps in (
        ("TensorBoard SummaryWriter", _tensorboard, 10_000),
        ("MLflow (SQLite store)", _mlflow, 200),
        ("Aim", _aim, 2_000),
    ):
        try:
            in_loop, total = measure(directory / name.split()[0], logged[:steps])
        except ImportError as error:
            out[name] = f"not installed ({error.name})"
            continue
        except Exception as error:  # installed, but cannot run here (e.g. mlflow-skinny)
            out[name] = f"cannot run here: {type(error).__name__}: {str(error)[:120]}"
            continue
        values = steps * len(METRICS)
        out[name] = (in_loop / values, total / values)
    return out


def _tensorboard(directory: Path, logged: list[dict[str, float]]) -> tuple[float, float]:
    from torch.utils.tensorboard import SummaryWriter

    began = time.perf_counter()
    writer = SummaryWriter(str(directory))
    loop = time.perf_counter()
    for step, values in enumerate(logged):
        for name, value in values.items():
            writer.add_scalar(name, value, step)
    in_loop = time.perf_counter() - loop
    writer.close()  # flushes the event file (no fsync: TensorBoard does not ask for one)
    return in_loop, time.perf_counter() - began


def _mlflow(directory: Path, logged: list[dict[str, float]]) -> tuple[float, float]:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    directory.mkdir()
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    mlflow.set_experiment("bench")  # creates the database: not timed
    began = time.perf_counter()
    with mlflow.start_run():
        loop = time.perf_counter()
        for step, values in enumerate(logged):
            mlflow.log_metrics(values, step=step)
        in_loop = time.perf_counter() - loop
    return in_loop, time.perf_counter() - began


def _aim(directory: Path, logged: list[dict[str, float]]) -> tuple[float, float]:
    from aim import Run as AimRun

    directory.mkdir()
    began = time.perf_counter()
    run = AimRun(repo=str(directory))
    loop = time.perf_counter()
    for step, values in enumerate(logged):
        for name, value in values.items():
            run.track(value, name=name, step=step)
    in_loop = time.perf_counter() - loop
    run.close()
    return in_loop, time.perf_counter() - began


def ours(directory: Path, runs: int, precomputed: list[dict[str, float]]) -> dict[str, float]:
    from fmforge.repository import Repository
    from fmforge.tracking import start_run
    from fmforge.tracking.reading import load_run
    from fmforge.tracking.views import RunsView

    (directory / "repo").mkdir()
    repo = Repository.init(directory / "repo")
    in_loop: list[float] = []
    per_call: list[int] = []
    starts: list[float] = []
    end_to_end = 0.0
    stored = 0
    for _ in range(runs):
        began = time.perf_counter()
        context = start_run("bench", repo=repo, detectors=[])
        run = context.__enter__()
        starts.append(time.perf_counter() - began)
        loop_start = time.perf_counter()
        log = run.log
        clock = time.perf_counter_ns
        for step, values in enumerate(precomputed):
            t0 = clock()
            log(values, step=step)
            per_call.append(clock() - t0)
        in_loop.append(time.perf_counter() - loop_start)
        context.__exit__(None, None, None)  # flushes, fsyncs, records RunFinished
        end_to_end += time.perf_counter() - began
        record = load_run(repo, run.id)
        stored += sum(repo.objects.size(d) for d in record.chunks)
    overlay = dashboard_overlay(repo, [r["id"] for r in repo.view(RunsView).rows()][:10])
    repo.close()
    total = runs * len(precomputed) * len(METRICS)
    return {
        **overlay,
        "in_loop": sum(in_loop) / total,
        "p99_call_us": float(np.percentile(per_call, 99)) / 1000,
        "end_to_end": end_to_end / total,
        "start_ms": float(np.median(starts)) * 1000,
        "bytes_per_value": stored / total,
    }


def dashboard_overlay(repo: Any, run_ids: list[str]) -> dict[str, float]:
    """Server-side milliseconds to read one metric of ``run_ids`` at 1,000 px: cold (chunks
    decoded) and warm (decoded chunks cached; they never change)."""
    from fmforge.tracking.reading import metric_overview

    timings = []
    for _ in range(2):
        began = time.perf_counter()
        for run_id in run_ids:
            metric_overview(repo, run_id, "loss", 1000)
        timings.append((time.perf_counter() - began) * 1000)
    return {"overlay_cold_ms": timings[0], "overlay_warm_ms": timings[1]}


def runs_table(directory: Path, runs: int = 1000, metrics: int = 50) -> dict[str, float]:
    """Milliseconds to list ``runs`` runs with last/min/max of ``metrics`` metrics each: the
    JSON the dashboard's ``/api/runs`` sends, and the Python dicts of ``RunsIndex.rows()``. The
    runs are recorded as the events a run writes (RunStarted, MetricsLogged with summaries,
    RunFinished) straight into the ledger: the figure is the projection's query."""
    from fmforge.repository import Repository
    from fmforge.tracking.events import MetricsLogged, RunFinished, RunStarted
    from fmforge.tracking.views import RunsView

    (directory / "table").mkdir()
    repo = Repository.init(directory / "table")
    summary = {
        f"metric_{m:02d}": {"count": 100, "last": 0.5, "min": 0.1, "max": 0.9, "non_finite": 0,
                            "last_step": 99}
        for m in range(metrics)
    }  # fmt: skip
    for i in range(runs):
        run_id = f"run-{i:05d}"
        repo.record(f"run/{run_id}", [
            RunStarted({"run": run_id, "project": "table", "name": run_id,
                                    "config": {"lr": i * 1e-6}, "config_flat": {"lr": i * 1e-6},
                                    "datasets": [], "base_model": None, "seed": None, "tags": [],
                                    "started": time.time()}),
            MetricsLogged({"chunk": "0" * 64, "bytes": 0, "values": 100 * metrics,
                                       "metrics": summary}),
            RunFinished({"status": "finished", "duration_s": 1.0, "summary": {},
                                     "anomalies": 0}),
        ])  # fmt: skip
    repo.view(RunsView)  # the projection catches up once, as a server does at start
    best = {"json": math.inf, "rows": math.inf}
    for _ in range(5):
        began = time.perf_counter()
        text = repo.view(RunsView).table_json()
        best["json"] = min(best["json"], time.perf_counter() - began)
        began = time.perf_counter()
        rows = repo.view(RunsView).rows()
        best["rows"] = min(best["rows"], time.perf_counter() - began)
    assert json.loads(text) == rows
    assert len(rows) == runs
    assert len(rows[0]["metrics"]) == metrics
    repo.close()
    return {key: seconds * 1000 for key, seconds in best.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(command: list[str], url: str, log: Path) -> Any:
    """Start a server process; return it once ``url`` answers (or raise with its log)."""
    import subprocess
    import urllib.request

    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(log.read_text()[-300:].strip() or "did not start") from None
            time.sleep(0.25)


def _log_over_http(url: str, logged: list[dict[str, float]], name: str) -> float:
    """Seconds per value for the MLflow client logging ``logged`` to the server at ``url``."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(name)
    for warm in range(2):  # connection, first-request costs: not timed
        with mlflow.start_run():
            mlflow.log_metrics(logged[warm], step=warm)
    began = time.perf_counter()
    with mlflow.start_run():
        for step, values in enumerate(logged):
            mlflow.log_metrics(values, step=step)
    return (time.perf_counter() - began) / (len(logged) * len(METRICS))


def mlflow_over_http(directory: Path, logged: list[dict[str, float]]) -> dict[str, float] | str:
    """Per-value seconds of the MLflow client through `fmforge ui` and through a stock
    `mlflow server`, or why it could not be measured."""
    try:
        import mlflow
        import mlflow.server.handlers  # noqa: F401  (absent or broken in mlflow-skinny)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401
    except ImportError as error:
        return f"skipped: the `mlflow` package is not installed ({error.name})"
    from fmforge.repository import Repository

    repo_dir = directory / "over-http"
    repo_dir.mkdir()
    Repository.init(repo_dir).close()
    out: dict[str, float] = {}
    servers = {
        "fmforge": [sys.executable, "-m", "fmforge", "--store", str(repo_dir), "ui", "--port"],
        "mlflow": [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   f"sqlite:///{directory / 'mlflow-http.db'}", "--artifacts-destination",
                   str(directory / "mlflow-artifacts"), "--host", "127.0.0.1", "--workers", "1",
                   "--port"],
    }  # fmt: skip
    for name, command in servers.items():
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        health = url + ("/" if name == "fmforge" else "/health")
        try:
            process = _serve([*command, str(port)], health, directory / f"{name}.log")
        except RuntimeError as error:
            return f"skipped: `{name}` server did not start ({error})"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints "View run ..."
                out[name] = _log_over_http(url, logged, f"bench-{name}")
        finally:
            process.terminate()
            process.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, steps = (3, 10_000) if args.quick else (10, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        logged = workload(steps)
        reference = raw_sqlite(Path(tmp), runs, logged)
        figures = ours(Path(tmp), runs, logged)
        table = runs_table(Path(tmp))
        others = peers(Path(tmp), logged)
        over_http = mlflow_over_http(Path(tmp), logged[: 300 if args.quick else 1000])
    ref_us = reference * 1e6
    rows = [
        Row("in-loop cost per logged value", f"{figures['in_loop'] * 1e6:.2f} us",
            f"{ref_us:.2f} us raw SQLite", figures["in_loop"] / reference, "<= 3x",
            figures["in_loop"] / reference <= 3),
        Row("p99 per log call (5 values)", f"{figures['p99_call_us']:.1f} us", "", None,
            "<= 50 us", figures["p99_call_us"] <= 50),
        Row("end-to-end (durably stored) cost per value", f"{figures['end_to_end'] * 1e6:.2f} us",
            f"{ref_us:.2f} us raw SQLite", figures["end_to_end"] / reference, "<= 5x",
            figures["end_to_end"] / reference <= 5),
        Row("run start", f"{figures['start_ms']:.1f} ms", "", None, "<= 50 ms",
            figures["start_ms"] <= 50),
        Row("storage per value (Parquet chunks)", f"{figures['bytes_per_value']:.2f} B", "",
            None, "<= 16 B", figures["bytes_per_value"] <= 16),
        Row("dashboard read: one metric of 10 runs x 10k steps at 1,000 px, server-side",
            f"{figures['overlay_cold_ms']:.1f} ms cold, {figures['overlay_warm_ms']:.1f} ms warm",
            "", None, "<= 50 ms", figures["overlay_cold_ms"] <= 50),
        Row("runs table: last/min/max of 50 metrics, 1,000 runs (JSON sent by /api/runs)",
            f"{table['json']:.1f} ms", "", None, "<= 50 ms", table["json"] <= 50),
        Row("  the same as Python dicts (RunsIndex.rows)", f"{table['rows']:.1f} ms", "", None,
            "", None),
    ]  # fmt: skip
    for name, figure in others.items():
        if isinstance(figure, str):
            rows.append(Row(f"peer: {name}", figure, "", None, "", None))
            continue
        in_loop, total = figure
        rows.append(Row(f"peer: {name}, in-loop / end-to-end per value",
                        f"{in_loop * 1e6:.1f} us / {total * 1e6:.1f} us",
                        f"{ref_us:.2f} us raw SQLite", in_loop / reference, "", None))  # fmt: skip
    if isinstance(over_http, str):
        rows.append(Row("MLflow client over HTTP: fmforge ui vs mlflow server, per value",
                        over_http, "", None, "<= 1.0x", None))  # fmt: skip
    else:
        ratio = over_http["fmforge"] / over_http["mlflow"]
        rows.append(Row("MLflow client over HTTP: fmforge ui vs mlflow server, per value",
                        f"{over_http['fmforge'] * 1e6:.1f} us",
                        f"{over_http['mlflow'] * 1e6:.1f} us mlflow server (SQLite)", ratio,
                        "<= 1.0x", ratio <= 1.0))  # fmt: skip
    print_table(f"Metric logging ({runs} runs x {steps} steps x {len(METRICS)} metrics)", rows)


if __name__ == "__main__":
    main()
