"""Hostile logins: a body that is no login attempt (bad JSON, a huge password or user name, a
form post) is refused in one line before anything is recorded; an unknown user, or a cookie
that is garbage, is refused and recorded as exactly one denial, nothing else; a bad
``fmforge access passwd`` changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fmforge.access.control import AccessControl
from fmforge.access.policy import PolicySpec
from fmforge.repository import Repository
from fmforge.server.app import create_app
from tests.hostile.harness import cli_refused, http_refused, snapshot, unchanged

JSON = {"Content-Type": "application/json"}
PASSWORD = "correct horse battery"


@pytest.fixture
def client(repo: Repository) -> Iterator[TestClient]:
    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "test")
    control.add_principal("user:ann")
    control.set_password("user:ann", PASSWORD)
    with TestClient(create_app(repo.root), base_url="http://127.0.0.1") as client:
        _checkpointed(repo)
        yield client


def _checkpointed(repo: Repository) -> None:
    """Wait for the server's checkpointer to sign the policy change (its one event of its
    own), so that what follows is all the requests'."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = list(repo.ledger.read_all(repo.ledger.head().seq))
        if last and last[-1].type == "CheckpointSigned":
            return
        time.sleep(0.1)
    raise AssertionError("no checkpoint signed after the policy change")


NOT_A_LOGIN = [
    ("bad JSON", b'{"user": "ann", "password": ', JSON, 400, "not JSON"),
    ("a list", b'["ann", "pw"]', JSON, 400, "JSON object"),
    ("no user", b'{"password": "correct horse battery"}', JSON, 400, '"user"'),
    ("no password", b'{"user": "ann"}', JSON, 400, '"password"'),
    ("a number as password", b'{"user": "ann", "password": 12345678}', JSON, 400, '"password"'),
    ("an empty password", b'{"user": "ann", "password": ""}', JSON, 400, '"password"'),
    ("a huge password", b'{"user": "ann", "password": "%s"}' % (b"x" * 5000), JSON, 400,
     "more than 1024 bytes"),
    ("a huge user name", b'{"user": "%s", "password": "pw"}' % (b"a" * 300), JSON, 400,
     "more than 256 characters"),
    ("a group", b'{"user": "group:admins", "password": "pw"}', JSON, 400, "kind must be"),
    ("a bad name", b'{"user": "a b", "password": "pw"}', JSON, 400, "invalid principal"),
    ("a form post", b"user=ann&password=pw",
     {"Content-Type": "application/x-www-form-urlencoded"}, 403, "application/json"),
    ("a body over the limit", b'{"user": "ann", "password": "%s"}' % (b"x" * 20_000_000), JSON,
     413, "server.max_body_bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "contains"),
    [case[1:] for case in NOT_A_LOGIN],
    ids=[case[0] for case in NOT_A_LOGIN],
)
def test_a_body_that_is_no_login_is_refused_before_anything_is_recorded(
    repo: Repository,
    client: TestClient,
    body: bytes,
    headers: dict[str, str],
    status: int,
    contains: str,
) -> None:
    with unchanged(repo.root):
        response = client.post("/login", content=body, headers=headers)
        http_refused(response, status, contains)
    assert "fmforge_session" not in response.headers.get("set-cookie", "")


def _one_denial(root: Path, before: int) -> dict[str, object]:
    with Repository.open(root) as repo:
        added = list(repo.ledger.read_all(before + 1))
        repo.verify()
    assert [e.type for e in added] == ["AccessDenied"], [e.type for e in added]
    return dict(added[0].data)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, None),  # the login below: an unknown user
        ({"Cookie": "fmforge_session=%%%not-base64%%%"}, "bad_session"),
        ({"Cookie": "fmforge_session=" + "A" * 5000 + ".B"}, "bad_session"),
        ({"Cookie": "fmforge_session=dXNlcjphbm4.AAAA"}, "bad_session"),
    ],
    ids=["unknown user", "garbage cookie", "huge cookie", "short payload"],
)
def test_an_unknown_user_or_a_garbage_cookie_is_one_denial_and_nothing_else(
    repo: Repository, client: TestClient, headers: dict[str, str], reason: str | None
) -> None:
    before = snapshot(repo.root)
    seq = repo.ledger.head().seq
    if reason is None:
        response = client.post("/login", json={"user": "mallory", "password": PASSWORD})
        http_refused(response, 401, "wrong user name or password")
        data = _one_denial(repo.root, seq)
        assert (data["principal"], data["reason"]) == ("user:mallory", "unknown_user")
    else:
        response = client.get("/api/runs", headers=headers)
        http_refused(response, 401, reason)
        data = _one_denial(repo.root, seq)
        assert (data["principal"], data["reason"]) == ("anonymous", reason)
    assert snapshot(repo.root).files == before.files


@pytest.mark.parametrize(
    "header",
    [b"\xe9\xe9", b"x" * 5000, b""],
    ids=["latin-1", "huge", "empty"],
)
def test_a_bad_csrf_header_is_one_denial(
    repo: Repository, client: TestClient, header: bytes
) -> None:
    assert client.post("/login", json={"user": "ann", "password": PASSWORD}).status_code == 200
    seq = repo.ledger.head().seq
    sent = [(b"content-type", b"application/json"), (b"x-csrf-token", header)]
    response = client.post("/logout", headers=sent)
    http_refused(response, 403, "X-CSRF-Token")
    data = _one_denial(repo.root, seq)
    assert (data["principal"], data["reason"]) == ("user:ann", "csrf")


PASSWD = [
    (["user:ann", "--password-stdin"], "\n", "empty line"),
    (["user:ann", "--password-stdin"], "short\n", "at least 8 characters"),
    (["user:ann", "--password-stdin"], "x" * 2000 + "\n", "at most 1024 bytes"),
    (["user:nobody", "--password-stdin"], PASSWORD + "\n", "no principal user:nobody"),
    (["group:admins", "--password-stdin"], PASSWORD + "\n", "is a group"),
    (["user:a b", "--password-stdin"], PASSWORD + "\n", "invalid principal"),
]


@pytest.mark.parametrize(("args", "stdin", "contains"), PASSWD, ids=[c for _, _, c in PASSWD])
def test_a_bad_passwd_changes_nothing(
    repo: Repository, args: list[str], stdin: str, contains: str
) -> None:
    control = AccessControl(repo)  # access control off: the CLI records nothing of its own
    control.add_principal("user:ann")
    control.add_principal("group:admins")
    cli_refused(repo.root, "access", "passwd", *args, stdin=stdin, contains=contains)
