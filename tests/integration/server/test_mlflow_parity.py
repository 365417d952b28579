"""MLflow client parity (issue 16): a training script exercising every call of the fluent API and
``MlflowClient`` (artifacts, lifecycle, search semantics, autolog, logged models, the registry)
runs against `fmforge ui` with every call working and every value read back correct
(``mlflow_every_call.py`` asserts them); here, what it left is checked on fmforge's side. A
server restart in the middle of a client's run, and a client killed mid-run, follow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.integration.server.conftest import free_port

from fmforge.models.refs import ModelRefs
from fmforge.models.registered import RegisteredModelsView
from fmforge.repository import Repository
from fmforge.tracking import load_run, read_metric
from fmforge.tracking.artifacts import ArtifactsView
from fmforge.tracking.views import RunsView

pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")  # log_figure; the full `mlflow` package brings it
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).with_name("mlflow_every_call.py")


def _env(server: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": server, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow
def test_every_call_of_an_mlflow_training_script_works(
    repo: Repository, server: str, tmp_path: Path
) -> None:
    out = tmp_path / "ids.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], env=_env(server), capture_output=True,
        text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "every call worked" in done.stdout
    ids = json.loads(out.read_text())

    # The run's files are objects named by events; nothing went into the client's directory.
    run = load_run(repo, ids["run"])
    files = {f.path: f for f in repo.view(ArtifactsView).files("run/" + ids["run"])}
    assert {"notes.txt", "docs/notes.txt", "outputs/sub/b.bin", "config/params.json",
            "plots/curve.png", "images/grey.png", "texts/readme.md"} <= set(files)  # fmt: skip
    assert repo.objects.get(files["outputs/sub/b.bin"].digest) == bytes(range(256)) * 40
    # Lifecycle: resumed once, finished again; params queryable as numbers by fmforge.
    assert run.status == "finished"
    types = [e.type for e in repo.ledger.read_stream("run/" + ids["run"])]
    assert (types.count("RunResumed"), types.count("RunFinished")) == (1, 2), types
    rows = repo.view(RunsView).rows("config.lr > 0.001 and config.epochs = 3")
    assert [r["id"] for r in rows] == [ids["run"]]
    assert load_run(repo, ids["child"]).parent == ids["run"]
    assert load_run(repo, ids["run"]).children == [ids["child"]]
    steps, values = read_metric(repo, ids["run"], "multi")
    assert steps.tolist() == [7, 7]
    assert sorted(values.tolist()) == [1.0, 2.0]
    # The client's environment became the run's: the script's path is its command.
    assert run.environment["command"][0].endswith("mlflow_every_call.py"), run.environment
    assert run.environment["host"] == "127.0.0.1"
    # The registry: each version a commit of the model, deleted or not; the history stays.
    commits = repo.view(ModelRefs).all_commits("parity-classifier")
    assert len(commits) == 2
    assert repo.view(RegisteredModelsView).models() == []  # deleted, as MLflow last saw it
    assert load_run(repo, ids["made"]).lifecycle == "active"


_RESTART_CLIENT = textwrap.dedent(
    """
    import sys, mlflow
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    experiment = client.create_experiment("restarts")
    run = client.create_run(experiment, run_name="survives").info.run_id
    for step in range(5):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    print(run, flush=True)
    sys.stdin.readline()  # the server restarts meanwhile
    for step in range(5, 10):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    client.log_param(run, "after", "restart")
    client.set_terminated(run)
    assert client.get_run(run).info.status == "FINISHED"
    print("done", flush=True)
    sys.stdout.close()
    """
)


@contextmanager
def ui(repo: Repository, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(repo.root), "ui", "--port", str(port),
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            break
        except OSError:
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.2)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_a_server_restart_never_breaks_a_clients_run(repo: Repository, tmp_path: Path) -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", _RESTART_CLIENT], env=_env(f"http://127.0.0.1:{port}"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path,
    ) as client:  # fmt: skip
        assert client.stdin is not None
        assert client.stdout is not None
        try:
            with ui(repo, port):
                run_id = client.stdout.readline().strip()
                assert run_id, client.stderr.read() if client.stderr else ""
            assert load_run(repo, run_id).status == "running"  # left open, not killed
            with ui(repo, port):
                client.stdin.write("\n")
                client.stdin.flush()
                lines = [line.strip() for line in client.stdout]  # MLflow prints "View run..."
                assert lines[-1:] == ["done"], client.stderr.read() if client.stderr else lines
        finally:
            client.kill()
    record = load_run(repo, run_id)
    assert record.status == "finished"
    assert record.config == {"after": "restart"}
    steps, values = read_metric(repo, run_id, "loss")
    assert steps.tolist() == list(range(10))
    assert values.tolist() == [1.0 / (s + 1) for s in range(10)]
    types = [e.type for e in repo.ledger.read_stream("run/" + run_id)]
    assert "RunHeartbeat" not in types  # the server never speaks for the client


_DYING_CLIENT = textwrap.dedent(
    """
    import os, signal, mlflow
    mlflow.set_experiment("dies")
    run = mlflow.start_run(run_name="killed")
    mlflow.log_metric("loss", 1.0)
    print(run.info.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_client_leaves_a_run_the_heartbeat_rule_marks_crashed(
    repo: Repository, tmp_path: Path
) -> None:
    port = free_port()
    with ui(repo, port, "--heartbeat-timeout", "3"):
        done = subprocess.run(
            [sys.executable, "-c", _DYING_CLIENT], env=_env(f"http://127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        run_id = done.stdout.strip()
        time.sleep(5)  # past the timeout, and a watch round of the server
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        ) as answer:
            status = json.loads(answer.read())["run"]["info"]["status"]
    assert status == "FAILED"
    record = load_run(repo, run_id, heartbeat_timeout_s=3)
    assert record.status == "crashed"
    assert [a["detector"] for a in record.anomalies] == ["heartbeat_lost"]
