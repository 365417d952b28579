"""Dashboard logins with passwords: ``fmforge access passwd`` records an argon2id hash (never
the password); ``POST /login`` checks it once and sets a signed session cookie and a CSRF
token; a wrong password is 401 and on the record; failed logins are limited (429 with
Retry-After); a change made with the cookie and without the CSRF token is 403; a tampered,
logged-out or outdated cookie is 401. In headless Chromium, the dashboard sends a visitor
without a session to the login page, and after logging in shows the runs."""

from __future__ import annotations

import base64
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from fmforge.access.control import AccessControl
from fmforge.access.policy import PolicySpec
from fmforge.access.sessions import FAILURES
from fmforge.cli.app import app as cli
from fmforge.repository import Repository
from fmforge.server.app import create_app
from fmforge.tracking import start_run
from tests.integration.server.conftest import ui_process

JSON = {"Content-Type": "application/json"}
PASSWORD = "correct horse battery"
ACCESS = ("AccessGranted", "AccessDenied")


def fm(root: Path, *args: str, input: str | None = None, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, ["--store", str(root), *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert (result.exit_code == 0) == ok, (args, result.output)
    return result


def _events(repo: Repository, after: int) -> list[Any]:
    return [e for e in repo.ledger.read_all(after + 1) if e.type in ACCESS]


@pytest.fixture
def ann(repo: Repository) -> Repository:
    """Access control on; ``user:ann`` may list and read runs, with a password."""
    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "test")
    control.add_principal("user:ann")
    control.grant("user:ann", "run", role="viewer")
    control.set_password("user:ann", PASSWORD)
    return repo


@pytest.fixture
def client(ann: Repository) -> Iterator[TestClient]:
    with TestClient(create_app(ann.root), base_url="http://127.0.0.1") as client:
        yield client


def login(client: TestClient, user: str = "ann", password: str = PASSWORD) -> Any:
    return client.post("/login", json={"user": user, "password": password}, headers=JSON)


def test_passwd_records_an_argon2id_hash_never_the_password(ann: Repository) -> None:
    fm(ann.root, "access", "passwd", "ann", "--password-stdin", input="another secret\n")
    fm(ann.root, "access", "passwd", "ann", input="typed twice!\ntyped twice!\n")
    mismatch = fm(ann.root, "access", "passwd", "ann", input="one value\nanother one\n", ok=False)
    assert mismatch.exit_code != 0
    short = fm(ann.root, "access", "passwd", "ann", "--password-stdin", input="short\n", ok=False)
    assert "at least 8 characters" in short.stderr
    listed = fm(ann.root, "access", "user", "ls").stdout
    assert "user:ann  groups=-  {}  password" in listed
    hashes = [e.data["hash"] for e in ann.ledger.read_all(1) if e.type == "PasswordSet"]
    assert len(hashes) == 3
    assert all(h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for h in hashes)
    raw = b"".join(p.read_bytes() for p in (ann.root / ".fmforge").rglob("*") if p.is_file())
    for secret in (PASSWORD, "another secret", "typed twice!"):
        assert secret.encode() not in raw, secret  # nowhere: ledger, projections, WAL


def test_a_login_sets_a_signed_httponly_strict_cookie_and_a_csrf_token(
    ann: Repository, client: TestClient
) -> None:
    before = ann.ledger.head().seq
    response = login(client)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["principal"] == "user:ann"
    cookies = {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}
    session = cookies["fmforge_session"]
    assert "HttpOnly" in session
    assert "SameSite=strict" in session
    assert "Path=/" in session
    assert "HttpOnly" not in cookies["fmforge_csrf"]  # the page's script reads it
    assert answer["csrf_token"] in cookies["fmforge_csrf"]
    assert PASSWORD not in response.text
    (event,) = _events(ann, before)
    assert event.type == "AccessGranted"
    assert (event.data["principal"], event.data["action"], event.data["reason"]) == (
        "user:ann", "login", "password",
    )  # fmt: skip
    assert event.data["request_id"] == response.headers["X-Request-Id"]
    # the cookie authenticates: the runs, and who it is
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/whoami").json()["principal"] == "user:ann"
    secret = ann.root / ".fmforge" / "keys" / "session.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("user", "password"), [("ann", "not the password"), ("mallory", PASSWORD)],
    ids=["wrong password", "unknown user"],
)  # fmt: skip
def test_a_wrong_password_or_user_is_401_and_on_the_record(
    ann: Repository, client: TestClient, user: str, password: str
) -> None:
    before = ann.ledger.head().seq
    response = login(client, user, password)
    assert response.status_code == 401
    assert response.json()["message"].endswith("wrong user name or password")  # no hint which
    assert "fmforge_session" not in response.headers.get("set-cookie", "")
    (event,) = _events(ann, before)
    assert event.type == "AccessDenied"
    assert event.data["principal"] == f"user:{user}"
    assert event.data["reason"] == ("bad_password" if user == "ann" else "unknown_user")
    assert client.get("/api/runs").status_code == 401
    denied = fm(ann.root, "audit", "denied", "--actor", f"user:{user}").stdout
    assert "login" in denied


def test_failed_logins_are_limited_per_principal_and_address(ann: Repository) -> None:
    AccessControl(ann).add_principal("user:bob")
    AccessControl(ann).set_password("user:bob", PASSWORD)
    app = create_app(ann.root)
    with (
        TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.1", 1)) as one,
        TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.2", 1)) as other,
    ):
        for _ in range(FAILURES):
            assert login(one, password="guess guess").status_code == 401
        before = ann.ledger.head().seq
        limited = login(one)  # the right password: not even checked
        assert limited.status_code == 429, limited.text
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "too many failed logins for user:ann" in limited.json()["message"]
        (event,) = _events(ann, before)
        assert (event.type, event.data["reason"]) == ("AccessDenied", "rate_limited")
        assert login(one, "bob").status_code == 200  # another principal from that address
        assert login(other).status_code == 200  # the same principal from another address


def test_a_change_with_the_cookie_needs_the_csrf_token(ann: Repository, client: TestClient) -> None:
    csrf = login(client).json()["csrf_token"]
    before = ann.ledger.head().seq
    refused = client.post("/logout", headers=JSON)
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["message"]
    wrong = client.post("/logout", headers={**JSON, "X-CSRF-Token": csrf[:-2] + "AA"})
    assert wrong.status_code == 403
    assert [e.data["reason"] for e in _events(ann, before)] == ["csrf", "csrf"]
    assert client.get("/api/runs").status_code == 200  # reads need none
    # a token needs none: it is no ambient credential a foreign page could ride on
    client.cookies.clear()
    issued = AccessControl(ann).issue_token("user:ann")
    bearer = {**JSON, "Authorization": f"Bearer {issued.token}"}
    assert client.post("/logout", headers=bearer).status_code == 200
    # with it, the session ends: its cookie no longer authenticates
    cookie = login(client).cookies["fmforge_session"]
    csrf = client.cookies["fmforge_csrf"]
    assert client.post("/logout", headers={**JSON, "X-CSRF-Token": csrf}).json() == {"ended": True}
    client.cookies.clear()
    client.cookies.set("fmforge_session", cookie)
    assert client.get("/api/runs").status_code == 401


def test_sessions_and_logouts_hold_across_a_restart(ann: Repository) -> None:
    with TestClient(create_app(ann.root), base_url="http://127.0.0.1") as first:
        kept = login(first).cookies["fmforge_session"]
        first.cookies.clear()
        ended = login(first).cookies["fmforge_session"]
        csrf = first.cookies["fmforge_csrf"]
        assert first.post("/logout", headers={**JSON, "X-CSRF-Token": csrf}).status_code == 200
    with TestClient(create_app(ann.root), base_url="http://127.0.0.1") as second:
        second.cookies.set("fmforge_session", kept)  # the secret is kept in .fmforge/keys
        assert second.get("/api/whoami").json()["principal"] == "user:ann"
        second.cookies.clear()
        second.cookies.set("fmforge_session", ended)  # its logout is on the record
        refused = second.get("/api/runs")
        assert refused.status_code == 401
        assert "logged out" in refused.json()["message"]


def _flip(cookie: str, payload: bool) -> str:
    data, mac = cookie.split(".")
    if payload:  # another principal, with the signature of the old payload
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        forged = raw.replace(b"user:ann", b"user:tester@fmforge")
        return base64.urlsafe_b64encode(forged).rstrip(b"=").decode() + "." + mac
    return data + "." + ("A" if mac[0] != "A" else "B") + mac[1:]


@pytest.mark.parametrize("payload", [True, False], ids=["payload", "signature"])
def test_a_tampered_cookie_is_401_and_on_the_record(
    ann: Repository, client: TestClient, payload: bool
) -> None:
    cookie = login(client).cookies["fmforge_session"]
    client.cookies.clear()
    client.cookies.set("fmforge_session", _flip(cookie, payload))
    before = ann.ledger.head().seq
    response = client.get("/api/runs")
    assert response.status_code == 401
    assert "bad_session" in response.json()["message"]
    (event,) = _events(ann, before)
    assert (event.type, event.data["principal"], event.data["reason"]) == (
        "AccessDenied", "anonymous", "bad_session",
    )  # fmt: skip


def test_a_new_password_or_a_disabled_principal_ends_its_sessions(
    ann: Repository, client: TestClient
) -> None:
    assert login(client).status_code == 200
    AccessControl(ann).set_password("user:ann", "a newer password")
    assert client.get("/api/runs").status_code == 401
    assert login(client, password="a newer password").status_code == 200
    AccessControl(ann).update_principal("user:ann", disabled=True)
    refused = client.get("/api/runs")
    assert refused.status_code == 401
    assert "disabled" in refused.json()["message"]
    assert login(client, password="a newer password").status_code == 401


def test_a_browser_without_a_session_is_sent_to_the_login_page(client: TestClient) -> None:
    page = client.get("/compare?runs=a", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fcompare%3Fruns%3Da"
    form = client.get("/login")
    assert form.status_code == 200
    assert 'type="password"' in form.text
    api = client.get("/api/runs")
    assert api.status_code == 401  # the API stays 401, with a Basic challenge for clients
    assert api.headers["WWW-Authenticate"].startswith("Basic")
    script = client.get("/api/runs", headers={"Sec-Fetch-Dest": "empty"})
    assert script.status_code == 401  # a page's fetch: no challenge (no browser dialog)
    assert "WWW-Authenticate" not in script.headers


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)
def test_in_a_browser_the_dashboard_asks_for_a_password_then_shows_the_runs(
    ann: Repository, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with start_run("cls", repo=ann, name="visible-run", system_interval=None) as run:
        run.log({"loss": 1.0}, step=0)
    with (
        ui_process(ann.root) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url + "/")
            page.wait_for_selector("form#login")
            assert "/login?next=" in page.url
            page.fill("#user", "ann")
            page.fill("#password", "not it at all")
            page.click("button[type=submit]")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "wrong user name or password" in page.inner_text("#error")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#runs[data-ready]")
            assert page.locator("#runs a").all_inner_texts() == ["visible-run"]
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["fmforge_session"]["httpOnly"] is True
            assert cookies["fmforge_session"]["sameSite"] == "Strict"
            # the session ends (a new password): the page's next fetch sends it to log in
            AccessControl(ann).set_password("user:ann", "a newer password")
            page.evaluate("api('/api/runs').catch(() => null)")
            page.wait_for_selector("form#login")
            assert "/login?next=%2F" in page.url
            page.fill("#user", "ann")
            page.fill("#password", "a newer password")
            page.click("button[type=submit]")
            page.wait_for_selector("#runs[data-ready]")
            # log out (a POST with the CSRF token): back to the login page, and the runs
            # page sends there again
            page.click("#logout")
            page.wait_for_selector("form#login")
            assert "fmforge_session" not in {c["name"] for c in page.context.cookies()}
            again = context.new_page()  # the same browser's cookies
            again.goto(url + "/compare")
            again.wait_for_selector("form#login")
            assert "/login?next=%2Fcompare" in again.url
            assert errors == []
        finally:
            browser.close()
