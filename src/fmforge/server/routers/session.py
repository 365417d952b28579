"""Who the caller is, and the dashboard's sessions: ``GET /api/whoami`` (what ``fmforge
login`` checks a token with), ``POST /logout``; ``POST /login`` is answered by
``fmforge.server.identity`` (``fmforge.server.login``) when access control is on, and here,
refused, when it is off."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fmforge.access.mediation import current_caller
from fmforge.access.sessions import COOKIE, CSRF_COOKIE
from fmforge.errors import InvalidRequest
from fmforge.server.identity import principal_of
from fmforge.server.login import SESSION_KEY

router = APIRouter()


@router.get("/api/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    caller = current_caller()
    if caller is None:  # access control off: the server knows only the address
        return {"principal": principal_of(request.scope), "via": "anonymous", "token_id": None}
    via = "session" if SESSION_KEY in request.scope else "token"
    token_id = caller.token.token_id if caller.token is not None else None
    return {"principal": caller.principal, "via": via, "token_id": token_id}


@router.post("/login")
async def login_off() -> None:
    raise InvalidRequest("access control is off on this server: there is nothing to log in to")


@router.post("/logout")
async def logout(request: Request) -> JSONResponse:
    """End the session of a request made with its cookie (its recorded ``logout`` event is
    what ends it: ``Gate.logged_out``), and clear the cookies."""
    response = JSONResponse({"ended": SESSION_KEY in request.scope})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
    return response
