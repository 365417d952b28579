"""The server's one error shape, and the one place errors become HTTP answers.

Every route of ``fmforge ui``, the dashboard's JSON as much as MLflow's API, answers an error as
MLflow's body plus fmforge's stable code::

    {"error_code": "INVALID_PARAMETER_VALUE", "message": "one line", "code": "invalid_request"}

The status is the error's ``http_status`` (``fmforge.errors``); ``error_code`` is the name in
MLflow's ``databricks_pb2.ErrorCode`` that the official client turns into an
``MlflowException``. Requests FastAPI refuses itself (a missing query parameter, an unknown
route) are translated into the same tree first, and anything unexpected is a 500 in the same
shape whose message names no more than the exception's type; the traceback goes to the log.

The serving app (``fmforge serve``) answers OpenAI's error object instead, which the official
clients turn into their exceptions (``install_openai``)::

    {"error": {"message": "one line", "type": "invalid_request_error", "param": "model",
               "code": "model_not_found"}}

with ``Retry-After`` on a 429 (``Overloaded``) and on a 503 that can be retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fmforge.errors import (
    AliasNotFound,
    EndpointNotFound,
    ExperimentExists,
    FmforgeError,
    InvalidRequest,
    MethodNotAllowed,
    ModelExists,
    Overloaded,
    PayloadTooLarge,
    RepositoryExists,
)

logger = logging.getLogger(__name__)

# MLflow's names (mlflow.protos.databricks_pb2.ErrorCode), by class first, then by status.
MLFLOW_CODE_BY_CLASS: dict[type[FmforgeError], str] = {
    EndpointNotFound: "ENDPOINT_NOT_FOUND",  # MethodNotAllowed too
    ExperimentExists: "RESOURCE_ALREADY_EXISTS",
    RepositoryExists: "RESOURCE_ALREADY_EXISTS",
    ModelExists: "RESOURCE_ALREADY_EXISTS",
    AliasNotFound: "INVALID_PARAMETER_VALUE",  # what MLflow's own server answers
}
MLFLOW_CODE_BY_STATUS: dict[int, str] = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "INVALID_PARAMETER_VALUE",  # what MLflow's server answers for an oversized batch
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
INTERNAL_CODE = "internal_error"


def mlflow_error_code(error: FmforgeError) -> str:
    for cls in type(error).__mro__:
        if cls in MLFLOW_CODE_BY_CLASS:
            return MLFLOW_CODE_BY_CLASS[cls]
    status = error.http_status
    if status in MLFLOW_CODE_BY_STATUS:
        return MLFLOW_CODE_BY_STATUS[status]
    return "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or "error"


def error_body(error: FmforgeError) -> dict[str, str]:
    return {
        "error_code": mlflow_error_code(error),
        "message": one_line(str(error)),
        "code": error.code,
    }


def error_response(error: FmforgeError) -> JSONResponse:
    allow = error.allow if isinstance(error, MethodNotAllowed) else ""
    return JSONResponse(
        error_body(error),
        status_code=error.http_status,
        headers={"Allow": allow} if allow else None,
    )


# ---- pydantic's and FastAPI's validation errors as one line -------------------------------

_PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "list_type": "must be a JSON array",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
}
CUSTOM_PREFIX = "fmforge_"
"""pydantic error types whose message already reads "must ..., got ..." (``mlflow_schemas``)."""


def show(value: object, limit: int = 40) -> str:
    """A value for a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_path(loc: Sequence[int | str]) -> str:
    """``("metrics", 0, "value")`` as ``metrics[0].value``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """One line for pydantic's ``errors()``: the first problem, naming the field (its ``loc``
    relative to the body, or FastAPI's ``("query", name)``)."""
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = list(first.get("loc", ()))
    if kind == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        detail = (first.get("ctx") or {}).get("error", "")
        return InvalidRequest(f"the request body is not valid JSON{where}: {detail}".rstrip(": "))
    if loc and loc[0] in ("query", "path", "header", "cookie"):
        subject = f"{loc[0]} parameter {field_path(loc[1:])!r}"
    else:
        name = field_path(loc[1:] if loc and loc[0] == "body" else loc)
        subject = f"field {name!r}" if name else "the request body"
    if kind.startswith(CUSTOM_PREFIX):
        problem = str(first.get("msg"))
    elif kind in _PHRASES:
        problem = _PHRASES[kind]
        if kind != "missing" and "input" in first:
            problem += f", got {show(first['input'])}"
    else:
        problem = f"is not valid: {first.get('msg', kind)}"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return InvalidRequest(f"{subject} {problem}{more}")


# ---- the handlers -------------------------------------------------------------------------


async def _fmforge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FmforgeError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(invalid_request(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (no route, wrong method, missing static file) in the shape."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    where = f"{request.method} {path if len(path) <= 200 else path[:197] + '...'}"
    error: FmforgeError
    if exc.status_code == 404:
        error = EndpointNotFound(f"no route answers {where}")
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        answers = f"answers only {allow}" if allow else f"does not answer {request.method}"
        error = MethodNotAllowed(f"{where}: the route {answers}", allow=allow)
    elif exc.status_code == 413:
        error = PayloadTooLarge(f"{where}: {exc.detail}")
    else:
        error = InvalidRequest(f"{where}: {exc.detail}")
    return error_response(error)


def install(app: FastAPI) -> None:
    """Route every error of ``app`` through the one shape."""
    app.add_exception_handler(FmforgeError, _fmforge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchUnexpected)  # added last: the outermost of ours


# ---- the serving app's shape: OpenAI's error object ---------------------------------------

OPENAI_TYPES: dict[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def openai_error_body(error: FmforgeError, param: str | None = None) -> dict[str, Any]:
    status = error.http_status
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": one_line(str(error)),
            "type": kind,
            "param": param if param is not None else getattr(error, "param", None),
            "code": error.code,
        }
    }


def openai_error_response(error: FmforgeError, param: str | None = None) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(error.retry_after)
    elif error.http_status == 503:
        headers["Retry-After"] = "1"
    if isinstance(error, MethodNotAllowed) and error.allow:
        headers["Allow"] = error.allow
    return JSONResponse(
        openai_error_body(error, param), status_code=error.http_status, headers=headers or None
    )


async def _openai_fmforge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FmforgeError)
    return openai_error_response(exc)


async def _openai_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    loc = [p for p in (problems[0].get("loc", ()) if problems else ()) if p != "body"]
    param = field_path(loc) if loc and isinstance(loc[0], str) else None
    return openai_error_response(invalid_request(problems), param)


async def _openai_http_error(request: Request, exc: Exception) -> JSONResponse:
    response = await _http_error(request, exc)
    body = orjson.loads(bytes(response.body))
    error_class = {404: EndpointNotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}.get(
        response.status_code, InvalidRequest
    )
    error = error_class(body["message"])
    if isinstance(error, MethodNotAllowed):
        error.allow = response.headers.get("Allow", "")
    return openai_error_response(error)


def _openai_internal(exc: Exception) -> dict[str, Any]:
    return {
        "error": {
            "message": f"internal error ({type(exc).__name__}); the server's log has details",
            "type": "server_error",
            "param": None,
            "code": INTERNAL_CODE,
        }
    }


def install_openai(app: FastAPI) -> None:
    """Route every error of ``app`` through OpenAI's error object."""
    app.add_exception_handler(FmforgeError, _openai_fmforge_error)
    app.add_exception_handler(RequestValidationError, _openai_validation_error)
    app.add_exception_handler(StarletteHTTPException, _openai_http_error)
    app.add_middleware(CatchUnexpected, body=_openai_internal)


def _mlflow_internal(exc: Exception) -> dict[str, Any]:
    return {
        "error_code": "INTERNAL_ERROR",
        "message": f"internal error ({type(exc).__name__}); the server's log has details",
        "code": INTERNAL_CODE,
    }


class CatchUnexpected:
    """Any exception no handler knew: logged with its traceback, answered as a 500 in the
    shape (when nothing of the answer was sent yet)."""

    def __init__(
        self, app: ASGIApp, body: Callable[[Exception], dict[str, Any]] = _mlflow_internal
    ) -> None:
        self.app = app
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            await JSONResponse(self.body(exc), status_code=500)(scope, receive, send)
