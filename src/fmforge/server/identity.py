"""Who a request acts as, and whether it may: the server's one enforcement point.

With access control off (the repository's default, ``fmforge.access.mediation``), a request is
``anonymous@<client address>``: the record says what the server knows and nothing it does
not. With it on, every request, to every route, the dashboard included:

1. authenticates: ``Authorization: Bearer <token>`` (MLflow's ``MLFLOW_TRACKING_TOKEN``), or
   HTTP Basic with a user name and a token as the password (``MLFLOW_TRACKING_USERNAME`` +
   ``MLFLOW_TRACKING_PASSWORD``; the user name must be the token's principal). A token is
   checked with one SHA-256 and one lookup;
2. is decided: the route's action and resource (``fmforge.access.http``: from its path, query
   or JSON body), through the token's scope;
3. is recorded, granted or denied (unauthenticated, expired, revoked or out-of-scope tokens
   included), before the route runs: ``AccessGranted`` / ``AccessDenied`` with the request's
   id, which the answer carries as ``X-Request-Id``. Refused requests get 401 (with
   ``WWW-Authenticate``) or 403 in the server's error shape, and no byte of the route.

The route then runs as the principal (``acting_as``, ``calling_as``): the library entry points
it calls decide again (a cached lookup) but record nothing more. What the server does on its
own (the heartbeat watch) is recorded as the user running it.
"""

from __future__ import annotations

import base64
import binascii
import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.routing import Match, Mount
from starlette.types import Message, Receive, Send

from fmforge.access import http as routes
from fmforge.access.mediation import (
    Caller,
    calling_as,
    gate,
    new_request_id,
    request_recorded,
    resolving,
)
from fmforge.errors import FmforgeError, Unauthenticated
from fmforge.repository import Repository, acting_as
from fmforge.server.errors import error_response

Scope = dict[str, Any]
Render = Callable[[FmforgeError], Any]
REALM = 'Basic realm="fmforge", charset="UTF-8"'


def principal_of(scope: Scope) -> str:
    """The principal of a request made without access control."""
    client = scope.get("client") or ("unknown", 0)
    return f"anonymous@{client[0]}"


def credentials(scope: Scope) -> tuple[str | None, str | None]:
    """(token, Basic user name) from the Authorization header; (None, None) without one."""
    header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
    if header is None:
        return None, None
    text = header.decode("latin-1").strip()
    kind, _, value = text.partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None, None
    if kind.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", None
        user, sep, password = decoded.partition(":")
        return (password if sep else ""), user
    return "", None


class PrincipalMiddleware:
    """Authenticates, decides and records every request (see the module docstring).
    ``repository(scope)`` is the repository a request is decided in (None while the server
    starts); ``table`` maps route paths to what they need; ``open_paths`` are answered without
    credentials; ``render`` answers a refusal in the app's error shape."""

    def __init__(
        self,
        app: Any,
        repository: Callable[[Scope], Repository | None] | None = None,
        table: Mapping[str, routes.Route] | Callable[[Scope], Mapping[str, routes.Route]]
        | None = None,
        open_paths: frozenset[str] = frozenset(),
        render: Render = error_response,
        purpose: str | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.purpose = purpose
        self.repository = repository or _ui_repository
        self.table = table if table is not None else routes.UI_ROUTES
        self.open_paths = open_paths
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        repo = self.repository(scope)
        if repo is None or not gate(repo).enabled() or scope["path"] in self.open_paths:
            with acting_as(principal_of(scope)):
                await self.app(scope, receive, send)
            return
        route, params, _template = self._route(scope)
        body: bytes | None = None
        if route is not None and route.body:
            body, receive = await _buffered(receive)
        request_id = new_request_id()
        token, username = credentials(scope)
        try:
            decision, record = await anyio.to_thread.run_sync(
                _decide, repo, route, scope, params, body, token, username, request_id,
                self.purpose,
            )  # fmt: skip
        except FmforgeError as error:
            await self._refuse(error, request_id, scope, receive, send)
            return
        caller = Caller(decision.principal, record, "http", request_id)
        with acting_as(decision.principal), calling_as(caller), request_recorded(decision):
            await self.app(scope, receive, _with_request_id(send, request_id))

    def _route(self, scope: Scope) -> tuple[routes.Route | None, dict[str, Any], str]:
        table = self.table(scope) if callable(self.table) else self.table
        for candidate in flat_routes(scope["app"]):
            match, child = candidate.matches(scope)
            if match is Match.FULL or (match is Match.PARTIAL and isinstance(candidate, Mount)):
                template = str(candidate.path)
                found = table.get(template) or routes.fallback(template, scope["method"])
                return found, dict(child.get("path_params", {})), template
        return None, {}, scope["path"]

    async def _refuse(
        self, error: FmforgeError, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = self.render(error)
        if isinstance(error, Unauthenticated):
            response.headers["WWW-Authenticate"] = REALM
        response.headers["X-Request-Id"] = request_id
        await response(scope, receive, send)


_flat: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def flat_routes(app: Any) -> list[Any]:
    """Every route of ``app`` that answers requests (routers included in it expanded), in
    the order the app tries them."""
    found = _flat.get(app)
    if found is None:
        found = _flat[app] = _expand(app.routes)
    return found


def _expand(candidates: Any) -> list[Any]:
    out: list[Any] = []
    for route in candidates:
        inner = getattr(route, "effective_candidates", None)  # FastAPI's included routers
        if callable(inner):
            out.extend(_expand(inner()))
        else:
            out.append(route)
    return out


def _ui_repository(scope: Scope) -> Repository | None:
    state = getattr(scope["app"].state, "fmforge", None)
    return getattr(state, "_repo", None)


def _decide(
    repo: Repository,
    route: routes.Route | None,
    scope: Scope,
    params: dict[str, Any],
    body: bytes | None,
    token: str | None,
    username: str | None,
    request_id: str,
    purpose: str | None,
) -> Any:
    keeper = gate(repo)
    keeper.refresh()
    if route is None:  # no route answers it: still only for whoever authenticates
        needs = [("read_meta", "repository")]
    else:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        request = routes.Request(
            scope["method"], params, query, parsed if isinstance(parsed, dict) else None
        )
        with resolving():
            needs = route.rule(repo, request)
    return keeper.authorize_request(token, username, needs, request_id=request_id, purpose=purpose)


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a ``receive`` that gives it again to the route."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _with_request_id(send: Send, request_id: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", request_id.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending
