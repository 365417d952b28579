"""What the server's guards let through, and that their settings move them (the refusals
themselves are in tests/hostile/test_http.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.hostile.harness import http_refused

from fmforge.errors import ConfigError
from fmforge.repository import Repository
from fmforge.server.app import create_app
from fmforge.settings import render_config_toml
from fmforge.tracking import read_metric

M = "/api/2.0/mlflow"


@contextmanager
def serving(root: Path, bind_host: str | None = None) -> Iterator[TestClient]:
    with TestClient(create_app(root, bind_host=bind_host), base_url="http://127.0.0.1") as client:
        yield client


def configure(repo: Repository, **values: object) -> None:
    (repo.path / "config.toml").write_text(
        render_config_toml({f"server.{k}": v for k, v in values.items()})
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:5000", "localhost:8080", "LOCALHOST", "[::1]:5000"]
)
def test_loopback_names_are_answered_on_any_port(repo: Repository, host: str) -> None:
    with serving(repo.root) as client:
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200


def test_allowed_hosts_replace_the_default_and_the_bind_host_is_added(repo: Repository) -> None:
    configure(repo, allowed_hosts="fmforge.internal, Runs.Example.")
    with serving(repo.root, bind_host="10.1.2.3") as client:
        for host in ("fmforge.internal", "runs.example:443", "10.1.2.3:5000"):
            assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host
        http_refused(client.get("/api/runs", headers={"Host": "127.0.0.1"}), 403)


def test_a_wildcard_bind_adds_no_name_and_star_answers_every_name(repo: Repository) -> None:
    with serving(repo.root, bind_host="0.0.0.0") as client:
        http_refused(client.get("/api/runs", headers={"Host": "0.0.0.0"}), 403)
    configure(repo, allowed_hosts="*")
    with serving(repo.root) as client:
        assert client.get("/api/runs", headers={"Host": "any.example"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},  # MLflow's client: JSON, no Origin
        {"Origin": "http://127.0.0.1"},  # the dashboard's own pages
        {"Origin": "http://127.0.0.1:80"},
        {"Referer": "http://127.0.0.1/runs/x"},
    ],
)
def test_same_site_json_writes_pass(repo: Repository, headers: dict[str, str]) -> None:
    with serving(repo.root) as client:
        response = client.post(
            f"{M}/experiments/create",
            json={"name": "e"},
            headers={**headers, "Content-Type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 200, response.text


def test_field_and_body_limits_follow_the_settings(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(repo, max_param_value_chars=10)
    monkeypatch.setenv("FMFORGE_SERVER_MAX_BODY_BYTES", "300")
    with serving(repo.root) as client:
        run = client.post(f"{M}/runs/create", json={}).json()["run"]["info"]["run_id"]
        param = {"run_id": run, "key": "p", "value": "v" * 10}
        assert client.post(f"{M}/runs/log-parameter", json=param).status_code == 200
        refused = client.post(f"{M}/runs/log-parameter", json={**param, "value": "v" * 11})
        http_refused(refused, 400, "the limit is 10 (setting server.max_param_value_chars)")
        big = client.post(f"{M}/runs/set-tag", json={"run_id": run, "key": "t", "value": "v" * 300})
        http_refused(big, 413, "the limit is 300")


def test_a_limit_below_one_is_a_config_error(repo: Repository) -> None:
    configure(repo, max_body_bytes=0)
    with pytest.raises(ConfigError, match=r"server\.max_body_bytes must be at least 1"):
        create_app(repo.root)


def test_protobuf_json_numbers_are_accepted(repo: Repository) -> None:
    """MLflow's client writes NaN as "NaN"; protobuf's JSON writes int64 as strings."""
    with serving(repo.root) as client:
        run = client.post(f"{M}/runs/create", json={}).json()["run"]["info"]["run_id"]
        for value, step in (("NaN", "1"), ("2.5", 2), (3, 3.0), (-1e300, "-4")):
            body = {"run_id": run, "key": "m", "value": value, "timestamp": "7", "step": step}
            response = client.post(f"{M}/runs/log-metric", json=body)
            assert response.status_code == 200, response.text
        client.get(f"{M}/runs/get", params={"run_id": run})  # flushes
        steps, values = read_metric(repo, run, "m")
    assert steps.tolist() == [1, 2, 3, -4]
    assert math.isnan(values[0])
    assert values[1:].tolist() == [2.5, 3.0, -1e300]


def test_mlflows_largest_valid_batch_passes(repo: Repository) -> None:
    """100 params and 100 tags at MLflow's length limits, plus 800 metrics: one request of the
    official client's log_batch, under the default body limit."""
    with serving(repo.root) as client:
        run = client.post(f"{M}/runs/create", json={}).json()["run"]["info"]["run_id"]
        body = {
            "run_id": run,
            "params": [
                {"key": f"p{i:03}".ljust(250, "p"), "value": "v" * 6000} for i in range(100)
            ],
            "tags": [{"key": f"t{i:03}".ljust(250, "t"), "value": "v" * 8000} for i in range(100)],
            "metrics": [
                {"key": "loss", "value": 1.0, "timestamp": 1, "step": s} for s in range(800)
            ],
        }
        response = client.post(f"{M}/runs/log-batch", json=body)
        assert response.status_code == 200, response.text
        got = client.get(f"{M}/runs/get", params={"run_id": run}).json()["run"]["data"]
    assert len(got["params"]) == 100
    assert len(got["tags"]) == 101  # and mlflow.runName
