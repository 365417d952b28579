"""The unmodified MLflow client against a real `fmforge ui` with access control on: it works
with a token (``MLFLOW_TRACKING_TOKEN``, Bearer) and with a user name and the token as the
password (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, Basic); without
credentials, or with a wrong password, it is refused and the refusal is on the record."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmforge.access.control import AccessControl
from fmforge.access.policy import PolicySpec
from fmforge.access.views import AccessLogView
from fmforge.repository import Repository
from fmforge.tracking import load_run, read_metric
from tests.integration.server.conftest import ui_process

_CLIENT = textwrap.dedent(
    """
    import sys
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        mlflow.set_experiment(sys.argv[1])
        with mlflow.start_run(run_name="with-credentials") as run:
            mlflow.log_param("lr", "0.01")
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        got = MlflowClient().get_run(run.info.run_id)
        assert got.data.params == {"lr": "0.01"}, got.data.params
        print("ok", run.info.run_id)
    except MlflowException as error:
        print("refused", error.error_code, str(error).splitlines()[0][:200])
    """
)


@pytest.fixture
def server(repo: Repository) -> Iterator[str]:
    """A real `fmforge ui` process over the test's repository."""
    with ui_process(repo.root) as url:
        yield url


def _client(server: str, tmp_path: Path, experiment: str, **env: str) -> list[str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FMFORGE_TOKEN"))
    }
    environment.update({"MLFLOW_TRACKING_URI": server, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, experiment], env=environment, capture_output=True,
        text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1].split(" ", 2)


def test_the_unmodified_client_with_a_token_and_with_user_and_token(
    repo: Repository, server: str, tmp_path: Path
) -> None:
    control = AccessControl(repo)  # turned on with the server running: the next request on
    control.bootstrap()
    control.set_policy(PolicySpec(), "test")
    control.add_principal("user:ml")
    control.grant("user:ml", "run", role="editor")
    token = control.issue_token("user:ml").token

    outcome, run_id = _client(server, tmp_path, "bearer", MLFLOW_TRACKING_TOKEN=token)
    assert outcome == "ok", run_id
    record = load_run(repo, run_id)
    assert (record.project, record.status) == ("bearer", "finished")
    assert read_metric(repo, run_id, "loss")[1].tolist() == [1.0, 0.5, 1.0 / 3]
    started = next(e for e in repo.ledger.read_stream(f"run/{run_id}") if e.type == "RunStarted")
    assert started.meta["actor"] == "user:ml"

    basic = {"MLFLOW_TRACKING_USERNAME": "ml", "MLFLOW_TRACKING_PASSWORD": token}
    outcome, run_id = _client(server, tmp_path, "basic", **basic)
    assert outcome == "ok", run_id
    assert load_run(repo, run_id).status == "finished"

    outcome, *detail = _client(server, tmp_path, "none")
    assert outcome == "refused", detail
    wrong = {"MLFLOW_TRACKING_USERNAME": "ml", "MLFLOW_TRACKING_PASSWORD": "not-the-token"}
    outcome, *detail = _client(server, tmp_path, "wrong", **wrong)
    assert outcome == "refused", detail
    reasons = [d.reason for d in repo.view(AccessLogView).denied()]
    assert reasons[:2] == ["malformed", "unauthenticated"]
