"""The dashboard's password login, as ``fmforge.server.identity`` answers it.

``POST /login`` with ``{"user": "ann", "password": "..."}`` (JSON: the request guard refuses a
form post, so no foreign page can log a browser in): a malformed body is refused (400) before
anything is recorded; every attempt that names a user and a password is exactly one access
event, ``AccessGranted`` (action ``login``, reason ``password``) or ``AccessDenied``
(``bad_password``, ``unknown_user``, ``rate_limited``). A wrong password and an unknown user
get the same answer, after the same argon2id work. Success sets the session cookie and the
CSRF cookie (``fmforge.access.sessions``) and answers the CSRF token.

A browser refused for want of credentials on a page is sent to ``/login?next=PATH``.
"""

from __future__ import annotations

import json
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Send

from fmforge.access.authorizer import Decision
from fmforge.access.mediation import gate, new_request_id
from fmforge.access.passwords import MAX_BYTES, dummy_hash, verify_password
from fmforge.access.principals import check_principal
from fmforge.access.sessions import (
    COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    FailedLogins,
    Session,
    Sessions,
)
from fmforge.errors import FmforgeError, InvalidPolicy, InvalidRequest, TooManyLogins
from fmforge.errors import Unauthenticated as NotAuthenticated
from fmforge.server.errors import error_response

if TYPE_CHECKING:
    from fmforge.repository import Repository

Scope = MutableMapping[str, Any]
SESSION_KEY = "fmforge.session"  # (Sessions, Session) of a request made with the cookie
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_USER_CHARS = 256
WRONG = "wrong user name or password"


def parse_login(body: bytes) -> tuple[str, str]:
    """(principal, password) of a login body; ``InvalidRequest`` naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the login body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest('the login body is a JSON object {"user": ..., "password": ...}')
    user, password = data.get("user"), data.get("password")
    if not isinstance(user, str) or not user:
        raise InvalidRequest('the login body needs "user", a non-empty string')
    if not isinstance(password, str) or not password:
        raise InvalidRequest('the login body needs "password", a non-empty string')
    if len(user) > MAX_USER_CHARS:
        raise InvalidRequest(f'"user" has more than {MAX_USER_CHARS} characters')
    if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise InvalidRequest(f'"password" has more than {MAX_BYTES} bytes')
    principal = user if ":" in user else f"user:{user}"
    try:
        check_principal(principal, ("user", "service"))
    except InvalidPolicy as exc:
        raise InvalidRequest(f'"user": {exc}') from None
    return principal, password


def _login(
    repo: Repository,
    sessions: Sessions,
    failed: FailedLogins,
    principal: str,
    password: str,
    address: str,
    request_id: str,
) -> Session:
    """Check one login attempt and record it (one event); the new session, or raise."""
    keeper = gate(repo)
    keeper.refresh()

    def deny(reason: str, detail: str) -> None:
        denial = Decision(False, principal, "login", "repository", reason, None, (), detail)
        keeper.record_login(denial, request_id=request_id)

    retry = failed.retry_after(principal, address)
    if retry:
        deny("rate_limited", f"{failed.failures} failed logins in {failed.window_s:.0f} s")
        raise TooManyLogins(
            f"too many failed logins for {principal} from {address}: retry in {retry} s", retry
        )
    state = keeper.control.state()
    stored = state.passwords.get(principal)
    found = state.principals.get(principal)
    matches = verify_password(password, stored[0] if stored else dummy_hash())
    if stored is None or found is None or found.disabled or not matches:
        failed.failed(principal, address)
        reason = "bad_password" if stored is not None and found is not None else "unknown_user"
        if found is not None and found.disabled:
            reason = "disabled"
        deny(reason, WRONG)
        raise NotAuthenticated("bad_password", WRONG)  # the same for every reason: no hints
    failed.succeeded(principal, address)
    session = sessions.issue(principal, stored[1])
    granted = Decision(True, principal, "login", "repository", "password")
    keeper.record_login(granted, request_id=request_id, session=session.session_id)
    return session


async def password_login(
    repo: Repository,
    sessions: Sessions,
    failed: FailedLogins,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Answer ``POST /login`` (see the module docstring)."""
    from fmforge.server.identity import _buffered

    body, _ = await _buffered(receive)
    request_id = new_request_id()
    address = str((scope.get("client") or ("unknown", 0))[0])
    try:
        principal, password = parse_login(body)
        session = await anyio.to_thread.run_sync(
            _login, repo, sessions, failed, principal, password, address, request_id
        )
    except FmforgeError as error:
        response: Response = error_response(error)
        response.headers["X-Request-Id"] = request_id
        await response(scope, receive, send)
        return
    csrf = sessions.csrf(session.session_id)
    response = JSONResponse(
        {"principal": session.principal, "csrf_token": csrf, "expires": session.expires}
    )
    secure = scope.get("scheme") == "https"
    age = max(1, int(session.expires - time.time()))
    response.set_cookie(
        COOKIE, sessions.cookie(session), max_age=age, path="/", httponly=True,
        samesite="strict", secure=secure,
    )  # fmt: skip
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, path="/", samesite="strict", secure=secure)
    response.headers["X-Request-Id"] = request_id
    response.headers["Cache-Control"] = "no-store"
    await response(scope, receive, send)


def session_of(scope: Scope, sessions: Sessions) -> tuple[Session | None, bool]:
    """(the session the request's cookie names, whether its CSRF token is right or not
    needed); (None, True) without a cookie; a session with no id for a cookie that fails."""
    headers = Headers(scope=scope)
    raw = headers.get("cookie")
    if not raw:
        return None, True
    value = cookie_parser(raw).get(COOKIE)
    if value is None:
        return None, True
    session = sessions.check(value)
    if session is None:
        return Session("", "", 0.0, 0), True
    csrf = scope["method"] not in UNSAFE or sessions.csrf_ok(session, headers.get(CSRF_HEADER))
    return session, csrf


def wants_page(scope: Scope) -> bool:
    """Whether a request is a browser's navigation to a page (not the JSON API's)."""
    accept = Headers(scope=scope).get("accept", "")
    return scope["method"] == "GET" and "text/html" in accept


def from_script(scope: Scope) -> bool:
    """Whether a request is a page's ``fetch`` (a browser's ``Sec-Fetch-Dest: empty``): its
    401 carries no Basic challenge, which would open the browser's password dialog over the
    page's own way to the login page."""
    return Headers(scope=scope).get("sec-fetch-dest") == "empty"


def login_redirect(scope: Scope) -> Response:
    target = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
