"""Serving with access control on: every ``/v1`` request authenticates and ``use``s the model
it names for the deployment's purpose, exactly one access event each, before it is answered;
an adapter trained from non-commercial data is refused for commercial serving
(``forbid:licence``); ``/health`` and ``/metrics`` stay open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fmforge.access.control import AccessControl
from fmforge.access.policy import PolicySpec
from fmforge.data import add_dataset
from fmforge.data.subjects import tag_dataset
from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.serving.api import create_serving_app
from fmforge.serving.deployment import Deployment, ServingConfig
from fmforge.tracking import start_run
from tests.integration.serving.conftest import TinyFiles

ACCESS = ("AccessGranted", "AccessDenied")


@pytest.fixture
def token(tiny_repo: Repository, tiny_files: TinyFiles, tmp_path: Path) -> str:
    repo = tiny_repo
    source = tmp_path / "nc.csv"
    source.write_text("text,label\nhi,1\nbye,0\n")
    tag_dataset(repo, "nc", licence="CC-BY-NC-4.0")
    add_dataset(repo, "nc", source)
    with start_run("lora", repo=repo, datasets=["nc@v1"]) as run:
        run.log({"loss": 0.1}, step=1)
    commit_model(
        repo, "nc-lora", tiny_files.adapters[1], "trained on nc", base="tiny@main",
        provenance={"run": run.id},
    )  # fmt: skip
    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "test")
    control.add_principal("service:app")
    control.grant("service:app", "model", role="user")
    return control.issue_token("service:app").token


@pytest.fixture
def client(tiny_repo: Repository, token: str) -> Iterator[TestClient]:
    config = ServingConfig(flush_s=0.2, purpose="commercial")
    dep = Deployment(tiny_repo.root, "tiny@main", ["ad0@main"], config)
    with TestClient(create_serving_app(dep), base_url="http://127.0.0.1") as test_client:
        yield test_client


def _events(repo: Repository, after: int) -> list[object]:
    return [e for e in repo.ledger.read_all(after + 1) if e.type in ACCESS]


def test_each_request_authenticates_and_uses_its_model_for_the_purpose(
    tiny_repo: Repository, token: str, client: TestClient
) -> None:
    repo = tiny_repo
    body = {"model": "ad0", "prompt": "hello", "max_tokens": 2, "temperature": 0}
    auth = {"Authorization": f"Bearer {token}"}
    for headers, model, status, outcome in (
        ({}, "ad0", 401, ("AccessDenied", "unauthenticated")),
        (auth, "ad0", 200, ("AccessGranted", None)),
        (auth, "nc-lora", 403, ("AccessDenied", "forbid:licence")),
    ):
        before = repo.ledger.head().seq
        answer = client.post("/v1/completions", json={**body, "model": model}, headers=headers)
        assert answer.status_code == status, answer.text
        (event,) = _events(repo, before)
        assert event.type == outcome[0]  # type: ignore[attr-defined]
        if outcome[1] is not None:
            assert event.data["reason"] == outcome[1]  # type: ignore[attr-defined]
        assert event.data["purpose"] == "commercial"  # type: ignore[attr-defined]
    before = repo.ledger.head().seq
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert _events(repo, before) == []
