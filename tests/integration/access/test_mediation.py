"""Complete mediation, walked: every public entry point of the library (the names the domain
packages export) and every HTTP route of ``fmforge ui`` is decided, and each call, allowed or
denied, yields exactly one access event (``AccessGranted`` / ``AccessDenied``); every denial
(library, CLI, HTTP, unauthenticated, expired and out-of-scope tokens) is listed by
``audit denied``.

The library walk is in two parts: an inventory (each exported callable that takes a
repository is mediated, or named in ``EXEMPT`` with the reason) and calls (each mediated
export called on real data, once denied and once allowed). The HTTP walk takes the routes from
the app itself, with a request for each from the error-shape walk's table.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from fmforge.access.control import AccessControl
from fmforge.access.mediation import TOKEN_ENV, is_mediated
from fmforge.access.policy import PolicySpec
from fmforge.access.tokens import Scope
from fmforge.access.views import AccessLogView
from fmforge.errors import AccessDenied, Unauthenticated
from fmforge.repository import Repository
from fmforge.server.app import create_app
from tests.clirunner import fm
from tests.integration.server.test_error_shape import BAD, ROUTES

ACCESS = ("AccessGranted", "AccessDenied")
PACKAGES = (
    "fmforge", "fmforge.models", "fmforge.data", "fmforge.data.labeling", "fmforge.tracking",
    "fmforge.training", "fmforge.merging", "fmforge.remotes", "fmforge.access",
)  # fmt: skip
EXEMPT = {
    "fmforge.init": "opens a run through start_run, which is mediated (one event per run)",
}
"""Exported callables that take a repository and are not themselves mediated, and why."""


def _exports() -> list[tuple[str, Any]]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for attr in getattr(package, "__all__", ()):
            value = getattr(package, attr)
            if inspect.isfunction(value) or inspect.isclass(value):
                found.append((f"{name}.{attr}", value))
    return found


def _takes_repository(value: Any) -> bool:
    if inspect.isclass(value):
        return False
    try:
        return "repo" in inspect.signature(value).parameters
    except (TypeError, ValueError):
        return False


def test_every_exported_entry_point_taking_a_repository_is_mediated() -> None:
    unmediated = [
        name for name, value in _exports()
        if _takes_repository(value) and not is_mediated(value) and name not in EXEMPT
    ]  # fmt: skip
    assert unmediated == [], "mediate these (or name them in EXEMPT with the reason)"
    methods = [
        n for n, f in vars(AccessControl).items() if inspect.isfunction(f) and is_mediated(f)
    ]
    assert {"grant", "revoke_grant", "issue_token", "set_policy", "add_principal"} <= set(methods)


def _access_events(repo: Repository, after: int) -> list[Any]:
    return [e for e in repo.ledger.read_all(after + 1) if e.type in ACCESS]


@dataclass
class World:
    repo: Repository
    tmp: Path
    run_id: str
    nobody: str  # a token of a principal with no grant
    admin: str  # the first admin's token


@pytest.fixture
def world(repo: Repository, tmp_path: Path) -> World:
    return _world(repo, tmp_path)


def _world(repo: Repository, tmp_path: Path) -> World:
    import fmforge.data as data
    import fmforge.models as models
    import fmforge.tracking as tracking

    source = tmp_path / "yt.csv"
    source.write_text("text,author,label\nhello,ann,1\nbye,bob,0\nspam,cy,1\n")
    data.add_dataset(repo, "yt", source)
    data.add_dataset(repo, "other", source)
    models.commit_tensors(repo, "m", {"w": np.zeros(4, np.float32)}, message="zero")
    models.commit_tensors(repo, "m", {"w": np.ones(4, np.float32)}, message="one")
    models.create_branch(repo, "m", "gone")
    (tmp_path / "weights").mkdir()
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "weights" / "model.safetensors"))
    with tracking.start_run("p", repo=repo) as run:
        run.log({"loss": 1.0}, step=0)
    control = AccessControl(repo)
    issued = control.bootstrap(token=True)
    assert issued is not None
    control.set_policy(PolicySpec(), "test")  # as `fmforge access init`: access control on
    control.add_principal("user:nobody")
    nobody = control.issue_token("user:nobody").token
    return World(repo, tmp_path, run.id, nobody, issued.token)


def _calls() -> dict[str, Callable[[World], Any]]:
    import fmforge.data as d
    import fmforge.merging as mg
    import fmforge.models as m
    import fmforge.tracking as t
    from fmforge.data import lineage, subjects
    from fmforge.merging import rebase
    from fmforge.tracking import compare, report

    def run(w: World) -> None:
        t.start_run("p", repo=w.repo).finish()

    def export(w: World) -> int:
        return d.export_dataset(w.repo, "yt", w.tmp / f"out-{time.monotonic_ns()}.csv")

    def checkout(w: World) -> Any:
        return m.checkout(w.repo, "m", w.tmp / f"co-{time.monotonic_ns()}")

    def table(w: World) -> Any:
        return d.commit_table(
            w.repo, "yt", pa.table({"text": ["x"], "author": ["a"], "label": [1]}), ["r" * 64],
            transformation={"kind": "test"}, message="one row",
        )  # fmt: skip

    def merged(w: World) -> Any:
        spec = mg.parse_spec({"method": "linear", "inputs": [{"model": "m@main"}]})
        return mg.merged_tensors(w.repo, spec)

    return {
        "data.add_dataset": lambda w: d.add_dataset(w.repo, "yt", w.tmp / "yt.csv"),
        "data.commit_table": table,
        "data.dataset_log": lambda w: d.dataset_log(w.repo, "yt"),
        "data.diff_datasets": lambda w: d.diff_datasets(w.repo, "yt", "other"),
        "data.export_dataset": export,
        "data.head": lambda w: d.head(w.repo, "yt", 2),
        "data.list_datasets": lambda w: d.list_datasets(w.repo),
        "data.merge_datasets": lambda w: d.merge_datasets(w.repo, "both", ["yt", "other"]),
        "data.query": lambda w: d.query(w.repo, "yt", "SELECT count(*) FROM data"),
        "data.read_table": lambda w: d.read_table(w.repo, "yt"),
        "data.resolve": lambda w: d.resolve(w.repo, "yt"),
        "data.where": lambda w: d.where(w.repo, "yt", "label = 1"),
        "data.trace": lambda w: lineage.trace(w.repo, "0" * 64),
        "data.forget": lambda w: lineage.forget(w.repo, "yt", "author = 'cy'", reason="asked"),
        "data.tag_dataset": lambda w: subjects.tag_dataset(w.repo, "yt", licence="CC-BY-4.0"),
        "data.dataset_tags": lambda w: subjects.dataset_tags(w.repo, "yt"),
        "models.checkout": checkout,
        "models.commit_tensors": lambda w: m.commit_tensors(
            w.repo, "m", {"w": np.full(4, 2, np.float32)}, message="two"
        ),
        "models.commit_model": lambda w: m.commit_model(w.repo, "m2", w.tmp / "weights", "first"),
        "models.delete_branch": lambda w: m.delete_branch(w.repo, "m", "gone"),
        "models.create_branch": lambda w: m.create_branch(w.repo, "m", "dev"),
        "models.create_tag": lambda w: m.create_tag(w.repo, "m", "v1"),
        "models.reset_branch": lambda w: m.reset_branch(w.repo, "m", "main", "main~1"),
        "models.diff_models": lambda w: m.diff_models(w.repo, "m@main~1", "m@main"),
        "models.iter_tensors": lambda w: list(m.iter_tensors("m", repo=w.repo)),
        "models.load_state_dict": lambda w: m.load_state_dict("m", repo=w.repo),
        "models.open_model": lambda w: m.open_model("m", repo=w.repo),
        "merging.merged_tensors": merged,
        "merging.merge": lambda w: mg.merge(
            w.repo, mg.parse_spec({"method": "linear", "inputs": [{"model": "m@main"}]}), name="m"
        ),
        "tracking.start_run": run,
        "tracking.list_runs": lambda w: t.list_runs(w.repo),
        "tracking.load_run": lambda w: t.load_run(w.repo, w.run_id),
        "tracking.read_metric": lambda w: t.read_metric(w.repo, w.run_id, "loss"),
        "tracking.runs_frame": lambda w: t.runs_frame(repo=w.repo),
        "tracking.dataset_usage": lambda w: t.dataset_usage(w.repo),
        "tracking.compare_runs": lambda w: compare.compare_runs(w.repo, [w.run_id]),
        "tracking.write_report": lambda w: report.write_report(
            w.repo, w.run_id, w.tmp / f"report-{time.monotonic_ns()}.html"
        ),
        "merging.rebase": lambda w: rebase.rebase(w.repo, "m@gone", "m@main~1"),
    }


CALLS = _calls()


@pytest.mark.parametrize("name", list(CALLS))
def test_each_call_denied_or_allowed_is_one_access_event(
    world: World, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, call = world.repo, CALLS[name]
    before = repo.ledger.head().seq
    with monkeypatch.context() as env:
        env.setenv(TOKEN_ENV, world.nobody)
        with pytest.raises(AccessDenied):
            call(world)
    (denied,) = _access_events(repo, before)
    assert (denied.type, denied.data["principal"]) == ("AccessDenied", "user:nobody")
    assert denied.data["reason"] == "no_grant"

    before = repo.ledger.head().seq
    try:
        call(world)
    except AccessDenied as exc:  # pragma: no cover - the failure names the call
        raise AssertionError(f"{name}: the admin was denied: {exc}") from exc
    except Exception:  # a refusal of the call's own (bad input) comes after the decision
        pass
    (granted,) = _access_events(repo, before)
    assert granted.type == "AccessGranted", (name, granted.data)


def test_the_call_table_covers_every_mediated_export() -> None:
    called = {name.rsplit(".", 1)[1] for name in CALLS}
    domains = ("fmforge.models.", "fmforge.data.", "fmforge.tracking.", "fmforge.merging.")
    exported = {
        name.rsplit(".", 1)[1] for name, value in _exports()
        if name.startswith(domains) and is_mediated(value) and _takes_repository(value)
    }  # fmt: skip
    # finetuning, evaluation, replays, label models and remotes are walked by their own
    # integration tests (they need a model to train or a second repository)
    elsewhere = {"end_model", "synthesize"}
    assert exported - called - elsewhere == set()


# --- HTTP ------------------------------------------------------------------------------------


def _example(method: str, path: str) -> tuple[str, str, bytes | None]:
    bad = BAD.get((method, path))
    if bad is not None:
        return bad[0], bad[1], bad[2]
    url = path.replace("{", "").replace("}", "").replace(":path", "")
    return method, ("/static/app.js" if path == "/static" else url), None


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.repo.root), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TestClient]]:
    """One world and server for the route walk (its requests change nothing it reads)."""
    tmp = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FMFORGE_USER", "tester@fmforge")
        (tmp / "repo").mkdir()
        with Repository.init(tmp / "repo") as repo:
            world = _world(repo, tmp)
            app = create_app(repo.root)
            with TestClient(app, base_url="http://127.0.0.1") as client:
                yield world, client


JSON = {"Content-Type": "application/json"}
M = "/api/2.0/mlflow"


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_each_request_to_every_route_is_one_access_event(
    served: tuple[World, TestClient], method: str, path: str
) -> None:
    world, client = served
    repo = world.repo
    verb, url, body = _example(method, path)
    for who, header, status, event in (
        ("no one", {}, 401, "AccessDenied"),
        ("nobody", {"Authorization": f"Bearer {world.nobody}"}, 403, "AccessDenied"),
        ("admin", {"Authorization": f"Bearer {world.admin}"}, None, "AccessGranted"),
    ):
        before = repo.ledger.head().seq
        response = client.request(verb, url, content=body, headers={**JSON, **header})
        if status is not None:
            assert response.status_code == status, (who, response.text)
        else:
            assert response.status_code not in (401, 403), (who, response.text)
        events = _access_events(repo, before)
        assert [e.type for e in events] == [event], (who, [e.data for e in events])
        assert events[0].data.get("request_id") == response.headers["X-Request-Id"]


def test_every_denial_is_listed_by_audit_denied(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fmforge.data as d

    repo = world.repo
    control = AccessControl(repo)
    control.grant("user:nobody", "dataset/other", role="viewer")
    short = control.issue_token("user:nobody", expires_in=0.05).token
    scoped = control.issue_token(
        "user:nobody", scopes=(Scope("dataset/yt", frozenset({"read"})),)
    ).token
    time.sleep(0.1)
    # the library
    with monkeypatch.context() as env:
        env.setenv(TOKEN_ENV, world.nobody)
        with pytest.raises(AccessDenied):
            d.read_table(repo, "yt")
        env.setenv(TOKEN_ENV, short)
        with pytest.raises(Unauthenticated, match="expired"):
            d.read_table(repo, "other")
    # the CLI
    monkeypatch.setenv(TOKEN_ENV, world.nobody)
    code, out = fm(repo.root, "data", "show", "yt")
    assert code == 1
    monkeypatch.delenv(TOKEN_ENV)
    # HTTP: no credentials, an expired token, a token scoped to another dataset, a bad password
    assert client.get("/api/datasets/other").status_code == 401
    bearer = {"Authorization": f"Bearer {short}"}
    assert client.get("/api/datasets/other", headers=bearer).status_code == 401
    bearer = {"Authorization": f"Bearer {scoped}"}
    assert client.get("/api/datasets/other/rows", headers=bearer).status_code == 403
    assert client.get("/api/datasets", auth=("nobody", "not-a-token")).status_code == 401

    denied = repo.view(AccessLogView).denied()
    via = {e.seq: e.data.get("via") for e in repo.ledger.read_all(types=("AccessDenied",))}
    assert [(d.principal, d.reason, via[d.seq]) for d in reversed(denied)] == [
        ("user:nobody", "no_grant", "library"),
        ("user:nobody", "expired", "library"),
        ("user:nobody", "no_grant", "cli"),
        ("anonymous", "unauthenticated", "http"),
        ("user:nobody", "expired", "http"),
        ("user:nobody", "token_scope", "http"),
        ("anonymous", "malformed", "http"),
    ]
    code, out = fm(repo.root, "audit", "denied")
    assert code == 0, out
    assert "7 denial(s)" in out
    for reason in ("no_grant", "expired", "token_scope"):  # (long ones wrap in the table)
        assert reason in out


def test_mlflows_registry_is_decided_on_the_model_it_names(
    world: World, client: TestClient
) -> None:
    """A registered model is an fmforge model: writing runs does not let one change it."""
    control = AccessControl(world.repo)
    control.grant("user:nobody", "run", role="editor")
    bearer = {"Authorization": f"Bearer {world.nobody}", **JSON}
    create = f"{M}/registered-models/create"
    response = client.post(create, content=b'{"name": "m"}', headers=bearer)
    assert response.status_code == 403, response.text
    (denied,) = world.repo.view(AccessLogView).denied("user:nobody")
    assert (denied.action, denied.resource, denied.reason) == ("commit", "model/m", "no_grant")
    rename = f"{M}/registered-models/rename"
    control.grant("user:nobody", "model/m", role="editor")
    response = client.post(create, content=b'{"name": "m"}', headers=bearer)
    assert response.status_code == 200, response.text
    body = b'{"name": "m", "new_name": "other"}'
    assert client.post(rename, content=body, headers=bearer).status_code == 403  # not other
    get = client.get(f"{M}/registered-models/get?name=m", headers=bearer)
    assert get.status_code == 200, get.text


def test_mlflows_artifact_proxy_is_decided_on_the_run_or_the_model_commit(
    world: World, client: TestClient
) -> None:
    """Reading runs does not let one download a model's files through the artifact proxy."""
    from fmforge.models import ModelRefs

    control = AccessControl(world.repo)
    control.grant("user:nobody", "run", role="viewer")
    bearer = {"Authorization": f"Bearer {world.nobody}"}
    commit = world.repo.view(ModelRefs).resolve("m", "main")
    url = f"/api/2.0/mlflow-artifacts/artifacts/model-commits/{commit}/model.safetensors"
    assert client.get(url, headers=bearer).status_code == 403
    (denied,) = world.repo.view(AccessLogView).denied("user:nobody")
    assert (denied.action, denied.resource) == ("read", f"model/m@{commit}")
    listing = f"/api/2.0/mlflow-artifacts/artifacts?path=0/{world.run_id}/artifacts"
    assert client.get(listing, headers=bearer).status_code == 200
    granted = [e for e in world.repo.ledger.read_all(types=("AccessGranted",))][-1]
    assert granted.data["resource"] == f"run/{world.run_id}"
    control.grant("user:nobody", "model/m", role="viewer")
    assert client.get(url, headers=bearer).status_code == 200
