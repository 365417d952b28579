"""Every route answers errors in one shape (datasette's ``tests/test_error_shape.py`` habit).

The walk below takes the routes from the app itself: a route added without a bad request to
try here fails ``test_every_route_has_a_bad_request``, so none escapes the shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount, Route
from tests.hostile.harness import http_refused

import fmforge.errors
from fmforge.errors import FmforgeError
from fmforge.repository import Repository
from fmforge.server.app import create_app
from fmforge.server.errors import MLFLOW_CODE_BY_CLASS, MLFLOW_CODE_BY_STATUS, mlflow_error_code

M = "/api/2.0/mlflow"
A = "/api/2.0/mlflow-artifacts"
JSON = {"Content-Type": "application/json"}
SHAPE = {"error_code", "message", "code"}

# (method, route path) -> a bad request to it: (method, URL, body, status); None for a route
# that takes no input to get wrong (its only bad request is a method it does not answer).
BAD: dict[tuple[str, str], tuple[str, str, bytes | None, int] | None] = {
    ("GET", "/"): None,
    ("GET", "/compare"): None,
    ("GET", "/runs/{run_id}"): None,  # the same page for every id; its JSON refuses
    ("GET", "/openapi.json"): None,
    ("GET", "/runs/{run_id}/report.html"): ("GET", "/runs/nope/report.html", None, 404),
    ("GET", "/api/runs"): ("GET", "/api/runs?where=((", None, 400),
    ("GET", "/api/runs/{run_id}"): ("GET", "/api/runs/nope", None, 404),
    ("GET", "/api/runs/{run_id}/series"): ("GET", "/api/runs/nope/series", None, 400),
    ("GET", "/api/models/{model}/commits/{commit}/changes"): (
        "GET", "/api/models/m/commits/c/changes", None, 404,
    ),
    ("GET", f"{M}/experiments/get-by-name"): ("GET", f"{M}/experiments/get-by-name", None, 400),
    ("GET", f"{M}/experiments/get"): ("GET", f"{M}/experiments/get?experiment_id=9", None, 404),
    ("GET", f"{M}/runs/get"): ("GET", f"{M}/runs/get?run_id=nope", None, 404),
    ("GET", f"{M}/metrics/get-history"): ("GET", f"{M}/metrics/get-history?run_id=x", None, 400),
    ("POST", f"{M}/experiments/create"): ("POST", f"{M}/experiments/create", b"{", 400),
    ("POST", f"{M}/runs/create"): ("POST", f"{M}/runs/create", b"[]", 400),
    ("POST", f"{M}/runs/update"): ("POST", f"{M}/runs/update", b"{}", 400),
    ("POST", f"{M}/runs/log-batch"): ("POST", f"{M}/runs/log-batch", b'{"run_id": 5}', 400),
    ("POST", f"{M}/runs/log-metric"): ("POST", f"{M}/runs/log-metric", b'"x"', 400),
    ("POST", f"{M}/runs/log-parameter"): ("POST", f"{M}/runs/log-parameter", b"{}", 400),
    ("POST", f"{M}/runs/set-tag"): ("POST", f"{M}/runs/set-tag", b'{"run_id": "nope"}', 400),
    ("POST", f"{M}/runs/search"): ("POST", f"{M}/runs/search", b'{"filter": "x >"}', 400),
    ("POST", f"{M}/runs/delete"): ("POST", f"{M}/runs/delete", b'{"run_id": "nope"}', 404),
    ("POST", f"{M}/runs/restore"): ("POST", f"{M}/runs/restore", b"{}", 400),
    ("POST", f"{M}/runs/delete-tag"): ("POST", f"{M}/runs/delete-tag", b'{"run_id": "x"}', 400),
    ("POST", f"{M}/runs/log-inputs"): ("POST", f"{M}/runs/log-inputs", b'{"run_id": "x"}', 404),
    ("POST", f"{M}/runs/outputs"): ("POST", f"{M}/runs/outputs", b'{"models": 1}', 400),
    ("GET", f"{M}/experiments/search"): (
        "GET", f"{M}/experiments/search?max_results=0", None, 400),
    ("POST", f"{M}/experiments/search"): (
        "POST", f"{M}/experiments/search", b'{"filter": "name ="}', 400),
    ("POST", f"{M}/experiments/update"): (
        "POST", f"{M}/experiments/update", b'{"experiment_id": "9", "new_name": "x"}', 404),
    ("POST", f"{M}/experiments/delete"): ("POST", f"{M}/experiments/delete", b"{}", 400),
    ("POST", f"{M}/experiments/restore"): (
        "POST", f"{M}/experiments/restore", b'{"experiment_id": "9"}', 404),
    ("POST", f"{M}/experiments/set-experiment-tag"): (
        "POST", f"{M}/experiments/set-experiment-tag", b'{"experiment_id": "0"}', 400),
    ("POST", f"{M}/experiments/delete-experiment-tag"): (
        "POST", f"{M}/experiments/delete-experiment-tag",
        b'{"experiment_id": "0", "key": "nope"}', 404),
    ("GET", f"{M}/artifacts/list"): ("GET", f"{M}/artifacts/list?run_id=nope", None, 404),
    ("PUT", f"{A}/artifacts/{{path:path}}"): ("PUT", f"{A}/artifacts/0/nope/artifacts/x", b"", 404),
    ("GET", f"{A}/artifacts/{{path:path}}"): ("GET", f"{A}/artifacts/0/r/artifacts/x", None, 404),
    ("DELETE", f"{A}/artifacts/{{path:path}}"): ("DELETE", f"{A}/artifacts/x", None, 400),
    ("GET", f"{A}/artifacts"): (
        "GET", f"{A}/artifacts?path=model-commits/{'0' * 64}", None, 404),
    ("POST", f"{M}/logged-models"): ("POST", f"{M}/logged-models", b'{"experiment_id": "9"}', 404),
    ("POST", f"{M}/logged-models/search"): (
        "POST", f"{M}/logged-models/search", b'{"max_results": 0}', 400),
    ("GET", f"{M}/logged-models/{{model_id}}"): ("GET", f"{M}/logged-models/m-1", None, 404),
    ("PATCH", f"{M}/logged-models/{{model_id}}"): (
        "PATCH", f"{M}/logged-models/m-1", b'{"status": 2}', 400),
    ("DELETE", f"{M}/logged-models/{{model_id}}"): (
        "DELETE", f"{M}/logged-models/m-1", None, 404),
    ("PATCH", f"{M}/logged-models/{{model_id}}/tags"): (
        "PATCH", f"{M}/logged-models/m-1/tags", b'{"tags": [{"key": 1}]}', 400),
    ("DELETE", f"{M}/logged-models/{{model_id}}/tags/{{key:path}}"): (
        "DELETE", f"{M}/logged-models/m-1/tags/k", None, 404),
    ("POST", f"{M}/logged-models/{{model_id}}/params"): (
        "POST", f"{M}/logged-models/m-1/params", b"{}", 404),
    ("POST", f"{M}/registered-models/create"): (
        "POST", f"{M}/registered-models/create", b'{"name": "a b"}', 400),
    ("GET", f"{M}/registered-models/get"): ("GET", f"{M}/registered-models/get?name=x", None, 404),
    ("POST", f"{M}/registered-models/rename"): (
        "POST", f"{M}/registered-models/rename", b'{"name": "x", "new_name": "y"}', 404),
    ("PATCH", f"{M}/registered-models/update"): (
        "PATCH", f"{M}/registered-models/update", b"{}", 400),
    ("DELETE", f"{M}/registered-models/delete"): (
        "DELETE", f"{M}/registered-models/delete", b'{"name": "x"}', 404),
    ("POST", f"{M}/registered-models/set-tag"): (
        "POST", f"{M}/registered-models/set-tag", b'{"name": "x", "key": "k"}', 404),
    ("DELETE", f"{M}/registered-models/delete-tag"): (
        "DELETE", f"{M}/registered-models/delete-tag", b'{"name": "x"}', 400),
    ("GET", f"{M}/registered-models/search"): (
        "GET", f"{M}/registered-models/search?filter=name%20%3D", None, 400),
    ("GET", f"{M}/registered-models/get-latest-versions"): (
        "GET", f"{M}/registered-models/get-latest-versions?name=x", None, 404),
    ("POST", f"{M}/registered-models/get-latest-versions"): (
        "POST", f"{M}/registered-models/get-latest-versions", b"{}", 400),
    ("POST", f"{M}/registered-models/alias"): (
        "POST", f"{M}/registered-models/alias", b'{"name": "x", "alias": "a"}', 404),
    ("DELETE", f"{M}/registered-models/alias"): (
        "DELETE", f"{M}/registered-models/alias", b'{"name": "x", "alias": "a"}', 404),
    ("GET", f"{M}/registered-models/alias"): (
        "GET", f"{M}/registered-models/alias?name=x", None, 400),
    ("POST", f"{M}/model-versions/create"): (
        "POST", f"{M}/model-versions/create", b'{"name": "x", "source": "s3://b"}', 400),
    ("GET", f"{M}/model-versions/get"): (
        "GET", f"{M}/model-versions/get?name=x&version=1", None, 404),
    ("PATCH", f"{M}/model-versions/update"): (
        "PATCH", f"{M}/model-versions/update", b'{"name": "x"}', 400),
    ("DELETE", f"{M}/model-versions/delete"): (
        "DELETE", f"{M}/model-versions/delete", b'{"name": "x", "version": "1"}', 404),
    ("POST", f"{M}/model-versions/set-tag"): (
        "POST", f"{M}/model-versions/set-tag", b'{"name": "x", "version": "1", "key": "k"}', 404),
    ("DELETE", f"{M}/model-versions/delete-tag"): (
        "DELETE", f"{M}/model-versions/delete-tag", b'{"name": "x", "version": "1"}', 400),
    ("GET", f"{M}/model-versions/search"): (
        "GET", f"{M}/model-versions/search?max_results=x", None, 400),
    ("GET", f"{M}/model-versions/get-download-uri"): (
        "GET", f"{M}/model-versions/get-download-uri?name=x&version=1", None, 404),
    ("GET", "/static"): ("GET", "/static/nope.js", None, 404),  # the mount
    ("GET", "/api/datasets"): None,
    ("GET", "/api/datasets/{target}"): ("GET", "/api/datasets/nope", None, 404),
    ("GET", "/api/datasets/{target}/rows"): ("GET", "/api/datasets/x/rows?limit=-1", None, 400),
    ("GET", "/api/audit/who-read"): ("GET", "/api/audit/who-read", None, 400),
    ("GET", "/api/audit/denied"): ("GET", "/api/audit/denied?since=then", None, 400),
    ("GET", "/api/audit/could-read"): ("GET", "/api/audit/could-read", None, 400),
    ("GET", "/api/audit/checkpoint"): ("GET", "/api/audit/checkpoint", None, 400),
}  # fmt: skip


def registered(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route, descending into included routers (newer FastAPI keeps
    them whole, as ``original_router``; their routes' paths carry the router's prefix, and
    the app includes them without one)."""
    found = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found += registered(included.routes)
        elif isinstance(route, Mount):
            found.append(("GET", route.path))
        elif isinstance(route, APIRoute | Route):
            found += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


@pytest.fixture
def client(repo: Repository) -> Iterator[TestClient]:
    with TestClient(create_app(repo.root), base_url="http://127.0.0.1") as client:
        yield client


def assert_shape(response: Any, status: int) -> dict[str, Any]:
    body = http_refused(response, status)
    assert set(body) == SHAPE, body
    return body


ROUTES = registered(create_app(Path(__file__).parent).routes)  # building the app opens nothing


def test_every_route_has_a_bad_request() -> None:
    assert sorted(ROUTES) == sorted(BAD), "a new route needs its bad request in BAD"


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_a_bad_request_answers_the_shape(client: TestClient, method: str, path: str) -> None:
    bad = BAD.get((method, path))
    if bad is not None:
        verb, url, body, status = bad
        assert_shape(client.request(verb, url, content=body, headers=JSON), status)
    # and a method the route's path does not answer
    answered = {m for m, p in ROUTES if p == path}
    other = next(m for m in ("PUT", "GET", "POST", "PATCH", "DELETE") if m not in answered)
    url = path.replace("{", "").replace("}", "").replace(":path", "")  # any value for each
    if path == "/static":
        url = "/static/app.js"
    body = assert_shape(client.request(other, url, content=b"{}", headers=JSON), 405)
    assert body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert body["code"] == "method_not_allowed"


def test_an_unknown_route_is_mlflows_endpoint_not_found(client: TestClient) -> None:
    body = assert_shape(client.get(f"{M}/registered-models/list"), 404)
    assert body == {
        "error_code": "ENDPOINT_NOT_FOUND",
        "message": f"no route answers GET {M}/registered-models/list",
        "code": "endpoint_not_found",
    }


def test_an_unexpected_error_is_a_500_in_the_shape_and_logged(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(repo.root)

    async def boom() -> None:
        raise RuntimeError("secret internals\nTraceback (most recent call last): ...")

    app.add_api_route("/boom", boom)
    with (
        TestClient(app, base_url="http://127.0.0.1") as client,
        caplog.at_level(logging.ERROR, logger="fmforge.server.errors"),
    ):
        response = client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert set(body) == SHAPE
    assert body["error_code"] == "INTERNAL_ERROR"
    assert body["code"] == "internal_error"
    assert "RuntimeError" in body["message"]
    assert "secret" not in body["message"]
    assert "\n" not in body["message"]
    (record,) = [r for r in caplog.records if r.name == "fmforge.server.errors"]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


def all_errors() -> list[type[FmforgeError]]:
    found: list[type[FmforgeError]] = []
    stack: list[type[FmforgeError]] = [FmforgeError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack += cls.__subclasses__()
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_maps_to_a_status_and_an_mlflow_error_code(cls: type[FmforgeError]) -> None:
    assert cls.__module__ == fmforge.errors.__name__
    assert 400 <= cls.http_status <= 599
    code = mlflow_error_code(cls.__new__(cls))
    databricks = pytest.importorskip("mlflow.protos.databricks_pb2")
    databricks.ErrorCode.Value(code)  # a name MLflow's client knows (raises if not)


def test_the_tables_name_only_mlflow_error_codes() -> None:
    databricks = pytest.importorskip("mlflow.protos.databricks_pb2")
    for code in [*MLFLOW_CODE_BY_CLASS.values(), *MLFLOW_CODE_BY_STATUS.values()]:
        databricks.ErrorCode.Value(code)
