"""Who a request acts as: the seam authentication plugs into.

Every event a request causes is recorded through ``Repository.record``, which stamps the
current principal (``fmforge.repository.acting_as``). Until authentication exists, nothing a
client says about itself is proof, so a request is ``anonymous@<client address>``: the record
says what the server knows and nothing it does not. What the server does on its own (the
heartbeat watch) is recorded as the user running it.
"""

from __future__ import annotations

from typing import Any

from fmforge.repository import acting_as

Scope = dict[str, Any]


def principal_of(scope: Scope) -> str:
    """The principal of an HTTP request (an authenticated identity, once there is one)."""
    client = scope.get("client") or ("unknown", 0)
    return f"anonymous@{client[0]}"


class PrincipalMiddleware:
    """Runs each request inside ``acting_as(principal_of(request))``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with acting_as(principal_of(scope)):
            await self.app(scope, receive, send)
