"""Unchanged MLflow client code records fmforge runs through `fmforge ui`'s REST API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.clirunner import fm

from fmforge.repository import Repository
from fmforge.tracking import load_run, read_metric
from fmforge.tracking.views import RunsView

pytest.importorskip("mlflow")


_CLIENT = textwrap.dedent(
    """
    import math, mlflow
    mlflow.set_experiment("mlflow-compat")
    with mlflow.start_run(run_name="from-mlflow") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 3, "optimizer": "adam"})
        mlflow.set_tag("team", "nlp")
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=50)
        fetched = mlflow.get_run(run.info.run_id)
        assert fetched.data.params["lr"] == "0.01", fetched.data.params
        assert fetched.data.tags["team"] == "nlp"
        history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == list(range(50)), history
        assert history[-1].value == 1.0 / 50
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("mlflow-compat").experiment_id
    found = client.search_runs([experiment], filter_string="metrics.acc > 0.5")
    assert [r.info.run_id for r in found] == [run.info.run_id], found
    assert found[0].data.metrics["acc"] == 0.9
    assert client.search_runs([experiment], filter_string="metrics.acc > 0.95") == []
    print(run.info.run_id)
    """
)


def test_the_official_client_logs_into_fmforge(
    repo: Repository, server: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT], env=env, capture_output=True, text=True, timeout=240,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[-1]
    record = load_run(repo, run_id)
    assert record.status == "finished"
    assert (record.project, record.name) == ("mlflow-compat", "from-mlflow")
    assert record.config["lr"] == "0.01"
    assert record.tag_values["team"] == "nlp"
    _steps, values = read_metric(repo, run_id, "loss")
    assert values.tolist() == [1.0 / (s + 1) for s in range(50)]
    (row,) = repo.view(RunsView).rows("config.optimizer = adam")
    assert row["metrics"]["acc"]["last"] == 0.9


_BAD_CALLS = textwrap.dedent(
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.create_experiment("bad-calls")
    run = client.create_run(experiment, run_name="survivor").info.run_id

    def refused(code, call, *words):
        try:
            call()
        except MlflowException as error:
            assert error.error_code == code, (code, error.error_code, str(error))
            for word in words:
                assert word in str(error), (word, str(error))
            return
        raise AssertionError(f"not refused: expected {code}")

    refused("RESOURCE_ALREADY_EXISTS", lambda: client.create_experiment("bad-calls"), "exists")
    refused("RESOURCE_DOES_NOT_EXIST", lambda: client.get_run("no-such-run"), "no-such-run")
    refused("RESOURCE_DOES_NOT_EXIST", lambda: client.get_experiment("999"), "999")
    refused("INVALID_PARAMETER_VALUE",
            lambda: client.search_runs([experiment], filter_string="metrics.acc >"), "filter")
    refused("INVALID_PARAMETER_VALUE", lambda: client.log_param(run, "lr", "x" * 7000),
            "server.max_param_value_chars")
    refused("INVALID_PARAMETER_VALUE", lambda: client.set_tag(run, "a|b", "v"), "'key'")
    refused("INVALID_PARAMETER_VALUE", lambda: client.create_experiment("x" * 600), "500")
    refused("RESOURCE_DOES_NOT_EXIST", lambda: client.log_metric("no-such-run", "loss", 1.0))
    client.log_param(run, "lr", "0.01")
    refused("RESOURCE_DOES_NOT_EXIST", lambda: client.delete_run("no-such-run"), "no-such-run")
    refused("INVALID_PARAMETER_VALUE", lambda: client.log_param(run, "lr", "0.02"), "lr")

    # The normal flow goes on as if nothing happened.
    for step in range(5):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run)
    history = client.get_metric_history(run, "loss")
    assert [m.step for m in history] == list(range(5)), history
    assert client.get_run(run).data.params == {"lr": "0.01"}
    print(run)
    """
)


def test_the_official_client_gets_mlflows_error_codes(
    repo: Repository, server: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    done = subprocess.run(
        [sys.executable, "-c", _BAD_CALLS], env=env, capture_output=True, text=True, timeout=240,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[-1]
    record = load_run(repo, run_id)
    assert record.status == "finished"
    assert record.config == {"lr": "0.01"}
    _steps, values = read_metric(repo, run_id, "loss")
    assert values.tolist() == [1.0 / (s + 1) for s in range(5)]


def test_native_projects_are_experiments_and_inputs_name_dataset_versions(
    repo: Repository, tmp_path: Path
) -> None:
    """A project fmforge runs use appears to MLflow clients as an experiment (nothing is
    written to show it); a logged input that names an fmforge dataset version records it."""
    from fastapi.testclient import TestClient

    from fmforge.data import add_dataset
    from fmforge.server.app import create_app
    from fmforge.tracking import start_run

    with start_run("native", repo=repo, config={"lr": 0.1}, system_interval=None) as run:
        run.log({"loss": 0.5}, step=0)
    (tmp_path / "comments.jsonl").write_text('{"text": "hi", "label": 1}\n')
    add_dataset(repo, "comments", tmp_path / "comments.jsonl")
    before = repo.ledger.count()
    m = "/api/2.0/mlflow"
    with TestClient(create_app(repo.root), base_url="http://127.0.0.1") as client:
        found = client.get(f"{m}/experiments/get-by-name", params={"experiment_name": "native"})
        assert found.status_code == 200, found.text
        experiment = found.json()["experiment"]["experiment_id"]
        assert repo.ledger.count() == before  # shown, not recorded
        runs = client.post(f"{m}/runs/search", json={"experiment_ids": [experiment]}).json()
        assert [r["info"]["run_id"] for r in runs["runs"]] == [run.id]
        assert runs["runs"][0]["data"]["params"] == [{"key": "lr", "value": "0.1"}]
        dataset = {"name": "comments@v1", "digest": "d1", "source_type": "local", "source": "x"}
        made = client.post(f"{m}/runs/create", json={"experiment_id": experiment}).json()
        mlflow_run = made["run"]["info"]["run_id"]
        answer = client.post(f"{m}/runs/log-inputs", json={
            "run_id": mlflow_run, "datasets": [{"dataset": dataset, "tags": [
                {"key": "mlflow.data.context", "value": "training"}]}]})  # fmt: skip
        assert answer.status_code == 200, answer.text
    (item,) = load_run(repo, mlflow_run).inputs
    assert item["datasets"][0]["version"] == "comments@v1"
    assert item["datasets"][0]["tags"] == {"mlflow.data.context": "training"}
    code, out = fm(repo.root, "runs", "show", mlflow_run)  # a remote client's environment
    assert code == 0, out
    assert "input   comments@v1 = comments@v1 (local)" in out
