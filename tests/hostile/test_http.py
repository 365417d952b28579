"""Hostile requests to `fmforge ui`: each is refused with a 4xx in the one error shape, in one
line naming the problem, and the repository is unchanged.

Most cases go through an in-process client over ``create_app(repo.root)`` (the whole ASGI
stack: guards, routers, handlers); a few go over the wire to a real `fmforge ui` process, for
what only a socket shows (a chunked body, the Host a real client sends).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from fmforge.repository import Repository
from fmforge.server.app import create_app
from tests.hostile.harness import http_refused, unchanged

M = "/api/2.0/mlflow"
A = "/api/2.0/mlflow-artifacts"
JSON = {"Content-Type": "application/json"}
BIG = 10**30


@dataclass(frozen=True)
class Api:
    client: TestClient
    run: str  # a run open through the MLflow API
    root: Any


@pytest.fixture
def api(repo: Repository) -> Iterator[Api]:
    with TestClient(create_app(repo.root), base_url="http://127.0.0.1") as client:
        created = client.post(f"{M}/experiments/create", json={"name": "taken"})
        assert created.status_code == 200, created.text
        answer = client.post(f"{M}/runs/create", json={"experiment_id": "0", "run_name": "r"})
        assert answer.status_code == 200, answer.text
        run = answer.json()["run"]["info"]["run_id"]
        ok = client.post(
            f"{M}/runs/log-metric",
            json={"run_id": run, "key": "loss", "value": 1.0, "timestamp": 0, "step": 0},
        )
        assert ok.status_code == 200, ok.text
        client.get(f"{M}/runs/get", params={"run_id": run})  # flushes the point
        _settle(repo, run)
        yield Api(client, run, repo.root)


def _settle(repo: Repository, run: str) -> None:
    """Wait for the run's writer thread to record its environment (it does so once)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(repo.ledger.read_all(types=["RunEnvironment"], streams=f"run/{run}")):
            return
        time.sleep(0.02)
    raise AssertionError("the run's environment was never recorded")


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: Any = None  # JSON-encoded unless bytes
    status: int = 400
    contains: str | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    error_code: str | None = None

    def send(self, api: Api) -> Any:
        path = self.path.replace("{run}", api.run)
        if self.body is None:
            content = None
        elif isinstance(self.body, bytes):
            content = self.body
        else:
            content = json.dumps(self.body).replace("{run}", api.run).encode()
        return api.client.request(self.method, path, content=content, headers=self.headers)


def metric(**changes: Any) -> dict[str, Any]:
    body = {"run_id": "{run}", "key": "acc", "value": 0.5, "timestamp": 1, "step": 1}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def batch(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"run_id": "{run}", "metrics": [], "params": [], "tags": []}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


_good = {"key": "acc", "value": 0.5, "timestamp": 1, "step": 1}

CASES = [
    # ---- bodies that are not one JSON object --------------------------------------------
    Case("malformed-json", "POST", f"{M}/experiments/create", b"{bad", contains="not JSON"),
    Case("truncated-json", "POST", f"{M}/experiments/create", b'{"name": "x"', contains="JSON"),
    Case("array-body", "POST", f"{M}/experiments/create", [1, 2], contains="got an array"),
    Case("string-body", "POST", f"{M}/experiments/create", "x", contains="got a string"),
    Case("number-body", "POST", f"{M}/runs/log-metric", 5, contains="JSON object"),
    Case("null-body", "POST", f"{M}/runs/log-batch", b"null", contains="JSON object"),
    Case("not-utf8", "POST", f"{M}/experiments/create", b'{"name": "\xff\xfe"}', contains="UTF-8"),
    Case("nested-deep", "POST", f"{M}/runs/log-batch", b"[" * 100_000, contains="nested"),
    Case(
        "huge-int-literal",
        "POST",
        f"{M}/runs/log-metric",
        b'{"value": ' + b"9" * 5000 + b"}",
        contains="JSON",
    ),
    # ---- experiments --------------------------------------------------------------------
    Case(
        "experiment-no-name", "POST", f"{M}/experiments/create", {}, contains="'name' is required"
    ),
    Case(
        "experiment-null-name", "POST", f"{M}/experiments/create", {"name": None}, contains="name"
    ),
    Case(
        "experiment-number-name",
        "POST",
        f"{M}/experiments/create",
        {"name": 5},
        contains="must be a string",
    ),
    Case(
        "experiment-empty-name",
        "POST",
        f"{M}/experiments/create",
        {"name": " "},
        contains="must not be empty",
    ),
    Case(
        "experiment-100kb-name",
        "POST",
        f"{M}/experiments/create",
        {"name": "x" * 100_000},
        contains="server.max_experiment_name_chars",
    ),
    Case(
        "experiment-lone-surrogate",
        "POST",
        f"{M}/experiments/create",
        b'{"name": "a\\ud800b"}',
        contains="surrogate",
    ),
    Case(
        "experiment-exists",
        "POST",
        f"{M}/experiments/create",
        {"name": "taken"},
        status=409,
        contains="exists already",
        error_code="RESOURCE_ALREADY_EXISTS",
    ),
    Case("experiment-get-missing-id", "GET", f"{M}/experiments/get", contains="experiment_id"),
    Case(
        "experiment-get-unknown",
        "GET",
        f"{M}/experiments/get?experiment_id=77",
        status=404,
        error_code="RESOURCE_DOES_NOT_EXIST",
    ),
    Case(
        "experiment-by-name-unknown",
        "GET",
        f"{M}/experiments/get-by-name?experiment_name=zz",
        status=404,
        contains="'zz'",
    ),
    # ---- runs/create, runs/update ---------------------------------------------------------
    Case(
        "run-unknown-experiment",
        "POST",
        f"{M}/runs/create",
        {"experiment_id": "77"},
        status=404,
        contains="77",
    ),
    Case(
        "run-experiment-id-number",
        "POST",
        f"{M}/runs/create",
        {"experiment_id": 0},
        contains="'experiment_id' must be a string",
    ),
    Case(
        "run-tags-not-list",
        "POST",
        f"{M}/runs/create",
        {"tags": "a=b"},
        contains="'tags' must be a JSON array",
    ),
    Case(
        "run-tag-bad-key",
        "POST",
        f"{M}/runs/create",
        {"tags": [{"key": "a<b>", "value": "v"}]},
        contains="tags[0].key",
    ),
    Case(
        "run-name-9000-chars",
        "POST",
        f"{M}/runs/create",
        {"run_name": "n" * 9000},
        contains="server.max_tag_value_chars",
    ),
    Case(
        "update-unknown-status",
        "POST",
        f"{M}/runs/update",
        {"run_id": "{run}", "status": "DONE"},
        contains="'status'",
    ),
    Case(
        "update-no-run-id",
        "POST",
        f"{M}/runs/update",
        {"status": "FINISHED"},
        contains="'run_id' is required",
    ),
    Case(
        "update-end-time-text",
        "POST",
        f"{M}/runs/update",
        {"run_id": "{run}", "status": "FINISHED", "end_time": "soon"},
        contains="end_time",
    ),
    Case("update-unknown-run", "POST", f"{M}/runs/update", {"run_id": "nope"}, status=404),
    # ---- log-metric: values, steps, timestamps, keys ------------------------------------
    Case(
        "value-string",
        "POST",
        f"{M}/runs/log-metric",
        metric(value="abc"),
        contains="'value' must be a number, got 'abc'",
    ),
    Case(
        "value-null",
        "POST",
        f"{M}/runs/log-metric",
        metric(value=None),
        contains="'value' is required",
    ),
    Case("value-missing", "POST", f"{M}/runs/log-metric", metric(value=...), contains="'value'"),
    Case("value-bool", "POST", f"{M}/runs/log-metric", metric(value=True), contains="number"),
    Case("value-object", "POST", f"{M}/runs/log-metric", metric(value={"x": 1}), contains="number"),
    Case(
        "value-beyond-float",
        "POST",
        f"{M}/runs/log-metric",
        metric(value=10**400),
        contains="'value'",
    ),
    Case(
        "step-10e30",
        "POST",
        f"{M}/runs/log-metric",
        metric(step=BIG),
        contains="'step' must fit in 64 bits",
    ),
    Case(
        "step-below-int64",
        "POST",
        f"{M}/runs/log-metric",
        metric(step=-(2**63) - 1),
        contains="64 bits",
    ),
    Case("step-string", "POST", f"{M}/runs/log-metric", metric(step="abc"), contains="'step'"),
    Case("step-fraction", "POST", f"{M}/runs/log-metric", metric(step=1.5), contains="integer"),
    Case(
        "timestamp-10e20",
        "POST",
        f"{M}/runs/log-metric",
        metric(timestamp=10**20),
        contains="'timestamp' must fit in 64 bits",
    ),
    Case(
        "timestamp-missing",
        "POST",
        f"{M}/runs/log-metric",
        metric(timestamp=...),
        contains="'timestamp' is required",
    ),
    Case("key-missing", "POST", f"{M}/runs/log-metric", metric(key=...), contains="'key'"),
    Case("key-empty", "POST", f"{M}/runs/log-metric", metric(key=""), contains="'key'"),
    Case("key-path", "POST", f"{M}/runs/log-metric", metric(key="a/../../b"), contains="path"),
    Case("key-newline", "POST", f"{M}/runs/log-metric", metric(key="a\nb"), contains="'key'"),
    Case(
        "key-300-chars",
        "POST",
        f"{M}/runs/log-metric",
        metric(key="k" * 300),
        contains="server.max_key_chars",
    ),
    Case(
        "metric-no-run-id",
        "POST",
        f"{M}/runs/log-metric",
        metric(run_id=...),
        contains="'run_id' is required",
    ),
    Case(
        "metric-unknown-run",
        "POST",
        f"{M}/runs/log-metric",
        metric(run_id="nope"),
        status=404,
        error_code="RESOURCE_DOES_NOT_EXIST",
    ),
    # ---- log-batch ----------------------------------------------------------------------
    Case(
        "batch-no-run-id",
        "POST",
        f"{M}/runs/log-batch",
        batch(run_id=...),
        contains="'run_id' is required",
    ),
    Case(
        "batch-metrics-number",
        "POST",
        f"{M}/runs/log-batch",
        batch(metrics=3),
        contains="'metrics' must be a JSON array",
    ),
    Case(
        "batch-metrics-object",
        "POST",
        f"{M}/runs/log-batch",
        batch(metrics={"a": 1}),
        contains="'metrics'",
    ),
    Case(
        "batch-metric-not-object",
        "POST",
        f"{M}/runs/log-batch",
        batch(metrics=["x"]),
        contains="'metrics[0]' must be a JSON object",
    ),
    Case(
        "batch-one-bad-of-three",
        "POST",
        f"{M}/runs/log-batch",
        batch(metrics=[_good, {**_good, "step": BIG}, _good]),
        contains="metrics[1].step",
    ),
    Case(
        "batch-1001-metrics",
        "POST",
        f"{M}/runs/log-batch",
        batch(metrics=[_good] * 1001),
        contains="server.max_metrics_per_batch",
    ),
    Case(
        "batch-101-params",
        "POST",
        f"{M}/runs/log-batch",
        batch(params=[{"key": f"p{i}", "value": "v"} for i in range(101)]),
        contains="server.max_params_tags_per_batch",
    ),
    Case(
        "batch-param-6001-chars",
        "POST",
        f"{M}/runs/log-batch",
        batch(params=[{"key": "p", "value": "v" * 6001}]),
        contains="params[0].value",
    ),
    Case(
        "batch-param-value-number",
        "POST",
        f"{M}/runs/log-batch",
        batch(params=[{"key": "p", "value": 5}]),
        contains="must be a string",
    ),
    Case(
        "batch-tag-8001-chars",
        "POST",
        f"{M}/runs/log-batch",
        batch(tags=[{"key": "t", "value": "v" * 8001}]),
        contains="tags[0].value",
    ),
    Case(
        "param-no-key",
        "POST",
        f"{M}/runs/log-parameter",
        {"run_id": "{run}", "value": "v"},
        contains="'key' is required",
    ),
    Case(
        "param-10mb",
        "POST",
        f"{M}/runs/log-parameter",
        {"run_id": "{run}", "key": "p", "value": "v" * 10_000_000},
        status=413,
        contains="server.max_body_bytes",
    ),
    Case(
        "tag-bad-key",
        "POST",
        f"{M}/runs/set-tag",
        {"run_id": "{run}", "key": "a|b", "value": ""},
        contains="'key'",
    ),
    # ---- search and reads ---------------------------------------------------------------
    Case(
        "search-bad-filter",
        "POST",
        f"{M}/runs/search",
        {"filter": "metrics.acc >"},
        contains="filter 'metrics.acc >'",
    ),
    Case(
        "search-filter-unknown-field",
        "POST",
        f"{M}/runs/search",
        {"filter": "1=1; DROP x"},
        contains="cannot read it at '; DROP x'",
    ),
    Case(
        "search-filter-deep",
        "POST",
        f"{M}/runs/search",
        {"filter": "(" * 5000 + "x"},
        contains="expected a name",
    ),
    Case(
        "search-filter-not-string",
        "POST",
        f"{M}/runs/search",
        {"filter": [1]},
        contains="'filter' must be a string",
    ),
    Case(
        "search-max-results-text",
        "POST",
        f"{M}/runs/search",
        {"max_results": "abc"},
        contains="'max_results' must be an integer",
    ),
    Case(
        "search-max-results-zero",
        "POST",
        f"{M}/runs/search",
        {"max_results": 0},
        contains="between 1 and 50000",
    ),
    Case(
        "search-experiment-ids-string",
        "POST",
        f"{M}/runs/search",
        {"experiment_ids": "0"},
        contains="'experiment_ids'",
    ),
    Case("get-run-unknown", "GET", f"{M}/runs/get?run_id=nope", status=404, contains="nope"),
    Case("get-run-no-id", "GET", f"{M}/runs/get", contains="'run_id' is required"),
    Case(
        "history-no-key",
        "GET",
        f"{M}/metrics/get-history?run_id={{run}}",
        contains="'metric_key' is required",
    ),
    Case("mlflow-unknown-route", "GET", f"{M}/nope", status=404, error_code="ENDPOINT_NOT_FOUND"),
    # ---- artifacts, the registry, search (issue 16) ---------------------------------------
    Case(
        "artifact-dot-dot",
        "PUT",
        f"{A}/artifacts/0/{{run}}/artifacts/a/%2e%2e/%2e%2e/x",
        b"x",
        headers={"Content-Type": "text/plain"},
        contains="'..'",
    ),
    Case(
        "artifact-backslash",
        "PUT",
        f"{A}/artifacts/0/{{run}}/artifacts/a%5Cb",
        b"x",
        headers={"Content-Type": "text/plain"},
        contains="backslash",
    ),
    Case(
        "artifact-unknown-run",
        "PUT",
        f"{A}/artifacts/0/nope/artifacts/x",
        b"x",
        headers={},
        status=404,
        contains="nope",
    ),
    Case(
        "artifact-outside-a-run",
        "PUT",
        f"{A}/artifacts/0/x",
        b"x",
        headers={},
        contains="not inside a run",
    ),
    Case(
        "artifact-missing",
        "GET",
        f"{A}/artifacts/0/{{run}}/artifacts/none.txt",
        status=404,
        contains="none.txt",
        error_code="RESOURCE_DOES_NOT_EXIST",
    ),
    Case(
        "artifact-listing-escapes",
        "GET",
        f"{M}/artifacts/list?run_id={{run}}&path=../x",
        contains="'..'",
    ),
    Case(
        "search-or",
        "POST",
        f"{M}/runs/search",
        {"filter": "params.a = '1' OR 1 = 1"},
        contains="expected AND",
    ),
    Case(
        "search-order-sideways",
        "POST",
        f"{M}/runs/search",
        {"order_by": ["metrics.x SIDEWAYS"]},
        contains="ASC or DESC",
    ),
    Case(
        "search-forged-page-token",
        "POST",
        f"{M}/runs/search",
        {"page_token": "zzz"},
        contains="page_token",
    ),
    Case(
        "search-metric-against-text",
        "POST",
        f"{M}/runs/search",
        {"filter": "metrics.loss > 'x'"},
        contains="numbers",
    ),
    Case(
        "experiment-rename-onto-another",
        "POST",
        f"{M}/experiments/update",
        {"experiment_id": "0", "new_name": "taken"},
        status=409,
        error_code="RESOURCE_ALREADY_EXISTS",
    ),
    Case(
        "experiment-delete-default",
        "POST",
        f"{M}/experiments/delete",
        {"experiment_id": "0"},
        contains="Default",
    ),
    Case(
        "registered-model-bad-name",
        "POST",
        f"{M}/registered-models/create",
        {"name": "../escape"},
        contains="name",
    ),
    Case(
        "model-version-foreign-source",
        "POST",
        f"{M}/model-versions/create",
        {"name": "m", "source": "s3://bucket/model"},
        contains="not a run's",
    ),
    Case(
        "model-version-empty-source",
        "POST",
        f"{M}/model-versions/create",
        {"name": "m", "source": "runs:/{run}/nothing-here"},
        contains="holds no files",
    ),
    Case(
        "registry-search-injection",
        "GET",
        f"{M}/registered-models/search?filter=name%20%3D%20'x'%3B%20DROP",
        contains="cannot read",
    ),
    Case(
        "delete-tag-never-set",
        "POST",
        f"{M}/runs/delete-tag",
        {"run_id": "{run}", "key": "k"},
        status=404,
        contains="'k'",
    ),
    Case(
        "mlflow-unsupported-route",
        "POST",
        f"{M}/model-versions/transition-stage",
        {"name": "m", "version": "1", "stage": "Staging"},
        status=404,
        error_code="ENDPOINT_NOT_FOUND",
    ),
    Case(
        "mlflow-wrong-method",
        "GET",
        f"{M}/runs/log-metric",
        status=405,
        contains="POST",
        error_code="ENDPOINT_NOT_FOUND",
    ),
    # ---- the dashboard's JSON and pages -------------------------------------------------
    Case("runs-bad-where", "GET", "/api/runs?where=lr%20%3E%201", contains="unknown field 'lr'"),
    Case("runs-deep-where", "GET", "/api/runs?where=" + "(" * 3000, contains="deeper"),
    Case("run-unknown", "GET", "/api/runs/nope", status=404, contains="no run 'nope'"),
    Case("series-no-metric", "GET", "/api/runs/{run}/series", contains="'metric' is required"),
    Case(
        "series-width-text",
        "GET",
        "/api/runs/{run}/series?metric=loss&width=wide",
        contains="'width' must be an integer",
    ),
    Case(
        "series-start-nan",
        "GET",
        "/api/runs/{run}/series?metric=loss&start=nan",
        contains="'start'",
    ),
    Case("changes-unknown-model", "GET", "/api/models/x/commits/y/changes", status=404),
    Case("report-unknown-run", "GET", "/runs/nope/report.html", status=404),
    Case("static-missing", "GET", "/static/nope.js", status=404, error_code="ENDPOINT_NOT_FOUND"),
    Case("unknown-page", "GET", "/admin", status=404, error_code="ENDPOINT_NOT_FOUND"),
    # ---- Host, cross-site requests, size ------------------------------------------------
    Case(
        "host-foreign",
        "GET",
        "/api/runs",
        headers={"Host": "evil.example"},
        status=403,
        contains="server.allowed_hosts",
        error_code="PERMISSION_DENIED",
    ),
    Case(
        "host-foreign-port", "GET", "/api/runs", headers={"Host": "evil.example:5000"}, status=403
    ),
    Case("host-suffix", "GET", "/api/runs", headers={"Host": "localhost.evil.example"}, status=403),
    Case("host-malformed-port", "GET", "/api/runs", headers={"Host": "127.0.0.1:http"}, status=403),
    Case(
        "csrf-text-plain-foreign",
        "POST",
        f"{M}/experiments/create",
        b'{"name": "csrf"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        status=403,
        contains="cross-site",
    ),
    Case(
        "csrf-text-plain",
        "POST",
        f"{M}/experiments/create",
        b'{"name": "csrf"}',
        headers={"Content-Type": "text/plain"},
        status=403,
        contains="application/json",
    ),
    Case(
        "csrf-form",
        "POST",
        f"{M}/experiments/create",
        b"name=csrf",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        status=403,
    ),
    Case(
        "csrf-no-content-type",
        "POST",
        f"{M}/experiments/create",
        b'{"name": "csrf"}',
        headers={},
        status=403,
        contains="got none",
    ),
    Case(
        "csrf-json-foreign-origin",
        "POST",
        f"{M}/experiments/create",
        {"name": "csrf"},
        headers={**JSON, "Origin": "http://evil.example"},
        status=403,
    ),
    Case(
        "csrf-origin-null",
        "POST",
        f"{M}/experiments/create",
        {"name": "csrf"},
        headers={**JSON, "Origin": "null"},
        status=403,
    ),
    Case(
        "csrf-other-local-port",
        "POST",
        f"{M}/experiments/create",
        {"name": "csrf"},
        headers={**JSON, "Origin": "http://127.0.0.1:3000"},
        status=403,
    ),
    Case(
        "csrf-foreign-referer",
        "POST",
        f"{M}/experiments/create",
        {"name": "csrf"},
        headers={**JSON, "Referer": "http://evil.example/page"},
        status=403,
        contains="Referer",
    ),
    Case("body-over-limit", "POST", f"{M}/runs/log-batch", b" " * 4_000_001, status=413),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused(api: Api, case: Case) -> None:
    with unchanged(api.root):
        body = http_refused(case.send(api), case.status, case.contains)
    assert set(body) == {"error_code", "message", "code"}, body
    if case.error_code is not None:
        assert body["error_code"] == case.error_code, body


def test_a_refused_step_loses_nothing_of_the_run(api: Api) -> None:
    """Issue 10: a step of 10**30 was accepted, then every point of the run was lost."""
    client = api.client
    with unchanged(api.root):
        http_refused(
            client.post(f"{M}/runs/log-metric", json=metric(run_id=api.run, step=BIG)), 400
        )
    ok = client.post(f"{M}/runs/log-metric", json=metric(run_id=api.run, step=2**63 - 1))
    assert ok.status_code == 200, ok.text
    history = client.get(
        f"{M}/metrics/get-history", params={"run_id": api.run, "metric_key": "loss"}
    )
    assert [(m["step"], m["value"]) for m in history.json()["metrics"]] == [(0, 1.0)]
    acc = client.get(f"{M}/metrics/get-history", params={"run_id": api.run, "metric_key": "acc"})
    assert [m["step"] for m in acc.json()["metrics"]] == [2**63 - 1]


def test_a_param_is_never_changed(api: Api) -> None:
    """MLflow keeps params fixed: the same value again is fine, another is refused."""
    client = api.client
    body = {"run_id": api.run, "key": "lr", "value": "0.01"}
    assert client.post(f"{M}/runs/log-parameter", json=body).status_code == 200
    assert client.post(f"{M}/runs/log-parameter", json=body).status_code == 200
    with unchanged(api.root):
        answer = client.post(f"{M}/runs/log-parameter", json={**body, "value": "0.02"})
        http_refused(answer, 400, "cannot change to '0.02'")
        batch_body = {"run_id": api.run, "params": [{"key": "wd", "value": "1"},
                                                    {"key": "wd", "value": "2"}]}  # fmt: skip
        http_refused(client.post(f"{M}/runs/log-batch", json=batch_body), 400, "'wd'")


def test_a_deleted_run_takes_nothing_until_restored(api: Api) -> None:
    client = api.client
    assert client.post(f"{M}/runs/delete", json={"run_id": api.run}).status_code == 200
    with unchanged(api.root):
        for path, body in (
            ("runs/log-metric", metric(run_id=api.run)),
            ("runs/delete-tag", {"run_id": api.run, "key": "x"}),
        ):
            http_refused(client.post(f"{M}/{path}", json=body), 400, "deleted")
        upload = client.put(f"{A}/artifacts/0/{api.run}/artifacts/x.txt", content=b"x")
        http_refused(upload, 400, "deleted")
    assert client.post(f"{M}/runs/restore", json={"run_id": api.run}).status_code == 200
    assert client.post(f"{M}/runs/log-metric", json=metric(run_id=api.run)).status_code == 200


# ---- over the wire, to a real `fmforge ui` -------------------------------------------------


@dataclass(frozen=True)
class WireResponse:
    status_code: int
    text: str


def wire(url: str, method: str, path: str, body: Any = None, **headers: str) -> WireResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host="Host" in headers)
        for name, value in headers.items():
            connection.putheader(name, value)
        if isinstance(body, list):  # chunks, sent without a Content-Length
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for chunk in body:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        else:
            data = body if isinstance(body, bytes) else b""
            if body is not None:
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data or None)
        response = connection.getresponse()
        return WireResponse(response.status, response.read().decode())
    finally:
        connection.close()


WIRE_CASES = [
    pytest.param(
        "POST",
        f"{M}/runs/search",
        [b" " * 262_144] * 20,
        {"Content-Type": "application/json"},
        413,
        "server.max_body_bytes",
        id="chunked-body-over-limit",
    ),
    pytest.param(
        "POST",
        f"{M}/experiments/create",
        b"{bad",
        {"Content-Type": "application/json"},
        400,
        "not JSON",
        id="malformed-json",
    ),
    pytest.param(
        "GET",
        "/api/runs",
        None,
        {"Host": "rebound.evil.example"},
        403,
        "rebound.evil.example",
        id="dns-rebinding-host",
    ),
    pytest.param(
        "POST",
        f"{M}/experiments/create",
        b'{"name": "csrf"}',
        {"Content-Type": "text/plain", "Origin": "http://evil.example"},
        403,
        "cross-site",
        id="csrf-text-plain",
    ),
    pytest.param("GET", f"{M}/no/such/route", None, {}, 404, "no route", id="unknown-route"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "contains"), WIRE_CASES)
def test_refused_over_the_wire(
    repo: Repository,
    server: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    contains: str,
) -> None:
    with unchanged(repo.root):
        http_refused(wire(server, method, path, body, **headers), status, contains)
