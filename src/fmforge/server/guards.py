"""What a request must pass before any route runs (authentication comes later, here).

- **Host.** Only the configured names (``server.allowed_hosts``: loopback by default, plus the
  name ``fmforge ui --host`` binds) are answered, on any port. A web page whose own name
  resolves to this machine (DNS rebinding) sends its own name as Host, and is refused.
- **Cross-site writes.** A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin``
  (else ``Referer``) is another site than the Host it was sent to is refused, and so is one
  that is not ``application/json``: a browser sends JSON cross-site only after a preflight,
  which this server never grants, so a form or ``text/plain`` post cannot record anything.
  MLflow's client sends JSON with no Origin and passes. (PUT, PATCH and DELETE need no JSON
  check: a browser sends them cross-site only after a preflight; MLflow uploads artifacts
  with PUT and the file's own type.)
- **Size.** A body over ``server.max_body_bytes`` (an artifact upload: over
  ``server.max_artifact_bytes``) is refused (413) from its Content-Length, or while it is
  read when it comes in chunks.

Field sizes (a param value, an experiment name) are checked where the body is parsed
(``mlflow_schemas``), against the same ``Limits``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fmforge.errors import (
    ConfigError,
    FmforgeError,
    InvalidRequest,
    PayloadTooLarge,
    RequestRefused,
)
from fmforge.server.errors import error_response, show
from fmforge.settings import Settings

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ARTIFACT_UPLOADS = "/api/2.0/mlflow-artifacts/artifacts/"  # PUTs of files: their own limit
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits, each the setting ``server.<field name>`` (defaults there)."""

    max_body_bytes: int
    max_artifact_bytes: int
    max_key_chars: int
    max_param_value_chars: int
    max_tag_value_chars: int
    max_experiment_name_chars: int
    max_metrics_per_batch: int
    max_params_tags_per_batch: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        values = {f.name: settings[f"server.{f.name}"] for f in dataclasses.fields(cls)}
        for name, value in values.items():
            if value < 1:
                raise ConfigError(f"setting server.{name} must be at least 1, got {value}")
        return cls(**values)


def allowed_hosts(settings: Settings, bind_host: str | None = None) -> frozenset[str] | None:
    """The host names to answer (lower case, no brackets); None answers every name."""
    names = {_bare(name) for name in str(settings["server.allowed_hosts"]).split(",")}
    names.discard("")
    if "*" in names:
        return None
    if bind_host is not None and bind_host.strip().lower() not in WILDCARD_BINDS:
        names.add(_bare(bind_host))
    return frozenset(names)


def _bare(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".")


def host_name(header: str) -> str | None:
    """The name in a Host header (``[::1]:5000`` -> ``::1``); None when it is malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, port = header[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        name, _, port = header.partition(":")
    if port and not (port.isdigit() and len(port) <= 5):
        return None
    return name.rstrip(".") or None


def _authority(netloc: str, scheme: str) -> str:
    netloc = netloc.strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def same_site(source: str, host: str) -> bool:
    """Whether the Origin or Referer ``source`` is the site the request was sent to."""
    try:
        parts = urlsplit(source.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file), or not a web origin
    return _authority(parts.netloc, parts.scheme) == _authority(host, "http")


class RequestGuard:
    """Pure ASGI middleware: the Host, cross-site and size checks above."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: frozenset[str] | None,
        limits: Limits,
        render: Callable[[FmforgeError], Response] = error_response,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.limits = limits
        self.render = render  # the app's error shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "PUT" and scope["path"].startswith(ARTIFACT_UPLOADS)
        limit, setting = (
            (self.limits.max_artifact_bytes, "server.max_artifact_bytes") if upload
            else (self.limits.max_body_bytes, "server.max_body_bytes")
        )  # fmt: skip
        try:
            self.check(scope["method"], Headers(scope=scope), limit, setting)
        except (RequestRefused, InvalidRequest, PayloadTooLarge) as refused:
            await self.render(refused)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(
                        f"the request body is over {limit} bytes (setting {setting})"
                    )
            return message

        await self.app(scope, limited_receive, send)

    def check(
        self,
        method: str,
        headers: Headers,
        limit: int | None = None,
        setting: str = "server.max_body_bytes",
    ) -> None:
        limit = self.limits.max_body_bytes if limit is None else limit
        host = headers.get("host")
        if host is None:
            raise RequestRefused("the request has no Host header")
        if self.hosts is not None and host_name(host) not in self.hosts:
            raise RequestRefused(
                f"host {show(host)} is not served here (setting server.allowed_hosts)"
            )
        if method in UNSAFE_METHODS:
            source, header = headers.get("origin"), "Origin"
            if source is None:
                source, header = headers.get("referer"), "Referer"
            if source is not None and not same_site(source, host):
                raise RequestRefused(
                    f"{method} with {header} {show(source)} refused: a cross-site request "
                    f"may not change anything on {show(host)}"
                )
            content_type = headers.get("content-type", "")
            # Only a POST can be sent cross-site without a preflight (which this server never
            # grants): a PUT, PATCH or DELETE never comes from a foreign page's form.
            if method == "POST" and content_type.split(";")[0].strip().lower() != (
                "application/json"
            ):
                got = show(content_type) if content_type else "none"
                raise RequestRefused(f"{method} needs Content-Type: application/json, got {got}")
        length = headers.get("content-length")
        if length is not None:
            digits = length.strip()
            if not digits.isdigit():
                raise InvalidRequest(f"Content-Length {show(length)} is not a number")
            if len(digits) > 18 or int(digits) > limit:
                raise PayloadTooLarge(
                    f"the request body has {digits if len(digits) <= 18 else 'more than 10**18'} "
                    f"bytes; the limit is {limit} (setting {setting})"
                )
