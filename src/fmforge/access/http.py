"""What each HTTP route does, as access control decides it: a table from a route's path
template to the action and resource a request of it needs, read from its path, its query
and (for MLflow's POST routes) its JSON body.

``fmforge.server.identity`` asks ``needs_of`` for every request before the route runs; a
route the tables do not name is decided by a coarse rule for its prefix (MLflow's API: a GET
reads runs, anything else writes them), so a route added later is mediated too, and the
complete-mediation test names any route that only the coarse rule covers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmforge.access.resources import format_resource
from fmforge.access.targets import dataset_resource, model_resource
from fmforge.errors import FmforgeError

if TYPE_CHECKING:
    from fmforge.access.mediation import Need
    from fmforge.repository import Repository

MLFLOW = "/api/2.0/mlflow"


@dataclass(frozen=True, slots=True)
class Request:
    """What a rule reads of a request."""

    method: str
    path: Mapping[str, Any]  # path parameters
    query: Mapping[str, str]
    body: Mapping[str, Any] | None  # the JSON body, when the rule asked for it


Rule = Callable[["Repository", Request], "list[Need]"]


@dataclass(frozen=True, slots=True)
class Route:
    rule: Rule
    body: bool = False  # the rule reads the JSON body


def _run(value: object) -> str:
    if isinstance(value, str) and value:
        try:
            return format_resource("run", value)
        except FmforgeError:
            pass
    return "run"


def _fixed(action: str, resource: str) -> Route:
    return Route(lambda repo, request: [(action, resource)])


def _run_from(action: str, where: str, *names: str) -> Route:
    def rule(repo: Repository, request: Request) -> list[Need]:
        source = request.body if where == "body" else request.query
        found = next((source[n] for n in names if source and source.get(n)), None)
        return [(action, _run(found))]

    return Route(rule, body=where == "body")


def _path_run(action: str) -> Route:
    return Route(lambda repo, request: [(action, _run(request.path.get("run_id")))])


def _commit_changes(repo: Repository, request: Request) -> list[Need]:
    model, commit = request.path["model"], request.path["commit"]
    return [("read", model_resource(repo, f"{model}@{commit}"))]


def _dataset(action: str) -> Route:
    return Route(lambda repo, request: [(action, dataset_resource(repo, request.path["target"]))])


def _registered(action: str, *also: str) -> Route:
    """MLflow's model registry: a registered model is an fmforge model (its versions commits,
    its aliases branches), so ``action`` is decided on ``model/NAME`` (the ``name`` of the
    query or the body; ``also``: other fields naming models, e.g. a rename's ``new_name``)."""

    def rule(repo: Repository, request: Request) -> list[Need]:
        out: list[Need] = []
        for field in ("name", *also):
            value = request.query.get(field) or (request.body or {}).get(field)
            resource = "model"
            if isinstance(value, str) and value:
                with contextlib.suppress(FmforgeError):
                    resource = format_resource("model", value)
            if field == "name" or resource != "model":
                out.append((action, resource))
        return out

    return Route(rule, body=True)


_REGISTRY: dict[str, Route] = {
    f"{MLFLOW}/registered-models/create": _registered("commit"),
    f"{MLFLOW}/registered-models/get": _registered("read"),
    f"{MLFLOW}/registered-models/rename": _registered("commit", "new_name"),
    f"{MLFLOW}/registered-models/update": _registered("commit"),
    f"{MLFLOW}/registered-models/delete": _registered("commit"),
    f"{MLFLOW}/registered-models/set-tag": _registered("commit"),
    f"{MLFLOW}/registered-models/delete-tag": _registered("commit"),
    f"{MLFLOW}/registered-models/search": _fixed("list", "model"),
    f"{MLFLOW}/registered-models/get-latest-versions": _registered("read"),
    f"{MLFLOW}/registered-models/alias": Route(
        lambda repo, request: _registered("read" if request.method == "GET" else "branch").rule(
            repo, request
        ),
        body=True,
    ),
    f"{MLFLOW}/model-versions/create": _registered("commit"),
    f"{MLFLOW}/model-versions/get": _registered("read"),
    f"{MLFLOW}/model-versions/update": _registered("commit"),
    f"{MLFLOW}/model-versions/delete": _registered("commit"),
    f"{MLFLOW}/model-versions/set-tag": _registered("commit"),
    f"{MLFLOW}/model-versions/delete-tag": _registered("commit"),
    f"{MLFLOW}/model-versions/search": _fixed("list", "model"),
    f"{MLFLOW}/model-versions/get-download-uri": _registered("read"),
}
"""MLflow's model registry routes (by path template)."""


def _artifact(repo: Repository, request: Request) -> list[Need]:
    """MLflow's artifact proxy: a run's files are the run's (``read`` / ``write``); a
    registered version's files (``model-commits/<commit>/...``) are that model commit's."""
    from fmforge.models.refs import ModelRefs
    from fmforge.server.mlflow_registry import artifact_owner

    path = str(request.path.get("path") or request.query.get("path") or "")
    action = "read" if request.method in ("GET", "HEAD") else "write"
    parts = path.strip("/").split("/")
    if parts[0] == "model-commits":
        resource = "model"
        if len(parts) > 1:
            with contextlib.suppress(FmforgeError):
                found = repo.view(ModelRefs).commit(parts[1])
                resource = format_resource("model", found.model, commit=found.commit)
        return [(action, resource)]
    try:
        owner, _ = artifact_owner(path)
    except FmforgeError:
        return [(action, "run")]
    return [(action, _run(owner.removeprefix("run/")) if owner.startswith("run/") else "run")]


UI_ROUTES: dict[str, Route] = {
    # the dashboard's pages and files: it lists runs
    "/": _fixed("list", "run"),
    "/compare": _fixed("list", "run"),
    "/runs/{run_id}": _path_run("read"),
    "/runs/{run_id}/report.html": _path_run("read"),
    "/static": _fixed("list", "run"),
    "/openapi.json": _fixed("list", "run"),
    # the JSON the dashboard reads
    "/api/runs": _fixed("list", "run"),
    "/api/runs/{run_id}": _path_run("read"),
    "/api/runs/{run_id}/series": _path_run("read"),
    "/api/models/{model}/commits/{commit}/changes": Route(_commit_changes),
    "/api/datasets": _fixed("list", "dataset"),
    "/api/datasets/{target}": _dataset("read_meta"),
    "/api/datasets/{target}/rows": _dataset("read"),
    "/api/audit/who-read": _fixed("audit.read", "audit"),
    "/api/audit/denied": _fixed("audit.read", "audit"),
    "/api/audit/could-read": _fixed("audit.read", "audit"),
    "/api/audit/checkpoint": _fixed("audit.read", "audit"),
    # MLflow's tracking API
    f"{MLFLOW}/experiments/get-by-name": _fixed("list", "run"),
    f"{MLFLOW}/experiments/get": _fixed("list", "run"),
    f"{MLFLOW}/experiments/search": _fixed("list", "run"),
    f"{MLFLOW}/experiments/create": _fixed("write", "run"),
    f"{MLFLOW}/runs/create": _fixed("write", "run"),
    f"{MLFLOW}/runs/update": _run_from("write", "body", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/log-batch": _run_from("write", "body", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/log-metric": _run_from("write", "body", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/log-parameter": _run_from("write", "body", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/set-tag": _run_from("write", "body", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/get": _run_from("read", "query", "run_id", "run_uuid"),
    f"{MLFLOW}/runs/search": _fixed("list", "run"),
    f"{MLFLOW}/metrics/get-history": _run_from("read", "query", "run_id", "run_uuid"),
    f"{MLFLOW}/artifacts/list": _run_from("read", "query", "run_id", "run_uuid"),
    f"{MLFLOW}-artifacts/artifacts": Route(_artifact),
    f"{MLFLOW}-artifacts/artifacts/{{path:path}}": Route(_artifact),
    **_REGISTRY,
}
"""``fmforge ui``'s routes (by path template)."""


def fallback(path: str, method: str) -> Route | None:
    """The coarse rule of a route the table does not name (None: no rule, refuse it)."""
    if path.startswith((MLFLOW, "/api/2.0/mlflow-artifacts")):
        return _fixed("read" if method in ("GET", "HEAD") else "write", "run")
    return None


def serving_routes(parse: Callable[[str], tuple[str, str, bool]]) -> dict[str, Route]:
    """``fmforge serve``'s routes: a request ``use``s the model its body names (``parse``:
    the deployment's reading of it), for the deployment's purpose."""

    def use(repo: Repository, request: Request) -> list[Need]:
        text = (request.body or {}).get("model")
        if not isinstance(text, str) or not text:
            return [("use", "model")]
        try:
            model, ref, _ = parse(text)
        except FmforgeError:
            return [("use", "model")]
        return [("use", model_resource(repo, f"{model}@{ref}"))]

    served = Route(use, body=True)
    return {
        "/v1/completions": served,
        "/v1/chat/completions": served,
        "/v1/embeddings": served,
        "/v1/classify": served,
        "/v1/models": _fixed("list", "model"),
    }


SERVING_OPEN = {
    "/health": "the orchestrator's liveness probe: the deployment's name and queue depths",
    "/metrics": "Prometheus's scrape: counters and gauges, no weights, prompts or outputs",
}
"""Serving routes answered without credentials, and why they may be."""
