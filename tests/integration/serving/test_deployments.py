"""Deployments as events: rollback pins followed live, lifted when the branch moves again;
two replicas on one team repository (PostgreSQL ledger, S3 objects) both following a move."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from fmforge.errors import DeploymentNotFound, UsageError
from fmforge.models import commit_model, reset_branch
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository
from fmforge.serving.deployment import Deployment, ServingConfig
from fmforge.serving.rollback import rollback
from fmforge.serving.views import DeploymentsView
from tests.clirunner import fm
from tests.integration.serving.conftest import TinyFiles
from tests.integration.serving.server import running_serve


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.05)


def two_versions(repo: Repository, files: TinyFiles) -> tuple[str, str]:
    commit_model(repo, "svc", files.adapters[0], "v1", base="tiny@main", branch="live")
    commit_model(repo, "svc", files.adapters[1], "v2", base="tiny@main", branch="live")
    refs = repo.view(ModelRefs)
    v2 = refs.resolve("svc", "live")
    return refs.resolve("svc", "live~1"), v2


def test_a_rollback_pins_a_reference_until_its_branch_moves_again(
    tiny_repo: Repository, tiny_files: TinyFiles
) -> None:
    v1, v2 = two_versions(tiny_repo, tiny_files)
    dep = Deployment(tiny_repo.root, "tiny", ["svc@live"], ServingConfig(deployment="prod"))
    dep.start()
    try:
        assert dep.resolve_now("svc").spec.commit == v2  # type: ignore[union-attr]
        result = rollback(tiny_repo, "prod", "svc@live")  # to where live was before: v1
        assert (result.commit, result.previous) == (v1, v2)
        eventually(lambda: dep.resolve_now("svc@live").spec.commit == v1)  # type: ignore[union-attr]
        pins = tiny_repo.view(DeploymentsView).pins("prod")
        assert pins[("svc", "live")].commit == v1
        with pytest.raises(UsageError, match="already serves"):
            rollback(tiny_repo, "prod", "svc@live", v1[:8])
        commit_model(
            tiny_repo, "svc", tiny_files.adapters[2], "v3", base="tiny@main", branch="live"
        )
        v3 = tiny_repo.view(ModelRefs).resolve("svc", "live")
        eventually(lambda: dep.resolve_now("svc@live").spec.commit == v3)  # type: ignore[union-attr]
        assert tiny_repo.view(DeploymentsView).pins("prod") == {}
    finally:
        dep.stop()
    with pytest.raises(DeploymentNotFound, match="no deployment named 'prd'"):
        rollback(tiny_repo, "prd", "svc@live")
    replicas = tiny_repo.view(DeploymentsView).replicas("prod")
    assert [r.running for r in replicas] == [False]
    assert replicas[0].adapters == [{"ref": "svc@live", "commit": v2}]
    code, listed = fm(tiny_repo.root, "deployment", "ls")
    assert code == 0
    (row,) = [line for line in listed.splitlines() if "prod" in line]
    assert "tiny" in row


def ask(url: str, model: str) -> dict[str, object]:
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 2}).encode()
    request = urllib.request.Request(
        url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_two_replicas_on_a_team_repository_follow_a_move_and_a_rollback(
    tmp_path: Path, postgres_url: str, s3_endpoint: str, tiny_files: TinyFiles
) -> None:
    first, second = tmp_path / "replica1", tmp_path / "replica2"
    first.mkdir()
    config = {
        "ledger.url": postgres_url, "objects.url": "s3://serving-team/fmforge",
        "objects.s3_endpoint_url": s3_endpoint,
    }  # fmt: skip
    with Repository.init(first, config=config) as repo:
        commit_model(repo, "tiny", tiny_files.base, "base")
        v1, v2 = two_versions(repo, tiny_files)
        reset_branch(repo, "svc", "live", v1)
    (second / ".fmforge").mkdir(parents=True)
    shutil.copy(first / ".fmforge" / "config.toml", second / ".fmforge" / "config.toml")
    args = ("--name", "prod", "--adapter", "svc@live")
    with running_serve(first, "tiny", *args) as one, running_serve(second, "tiny", *args) as two:
        for url in (one, two):
            assert ask(url, "svc@live")["system_fingerprint"] == f"fmforge-{v1[:12]}"
            models = json.loads(urllib.request.urlopen(url + "/v1/models").read())
            (card,) = [c for c in models["data"] if c["id"] == "svc@live"]
            assert card["tier"] in ("device", "host")
        with Repository.open(first) as repo:
            reset_branch(repo, "svc", "live", v2)
        for url in (one, two):
            eventually(
                lambda url=url: ask(url, "svc")["system_fingerprint"] == f"fmforge-{v2[:12]}"
            )
        code, out = fm(second, "deployment", "rollback", "prod", "svc@live")
        assert code == 0, out
        assert f"now serves {v1[:12]}" in out
        for url in (one, two):
            eventually(
                lambda url=url: ask(url, "svc")["system_fingerprint"] == f"fmforge-{v1[:12]}"
            )
        code, shown = fm(first, "deployment", "show", "prod")
        assert shown.count("running") == 2, shown
        assert f"pin: svc@live serves {v1[:12]}" in shown
    with Repository.open(second) as repo:
        kinds = [e.type for e in repo.ledger.read_all(1) if e.stream == "deployment/prod"]
    assert kinds.count("DeploymentStarted") == 2
    assert kinds.count("DeploymentStopped") == 2
    assert kinds.count("DeploymentRolledBack") == 1
