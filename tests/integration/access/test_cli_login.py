"""``fmforge login URL`` against a real `fmforge ui`: the token, read from standard input or a
hidden prompt, is checked with ``GET /api/whoami`` and stored in
``$XDG_CONFIG_HOME/fmforge/credentials.toml`` (mode 0600), keyed by URL, and never printed;
a refused token is not stored; ``FMFORGE_TOKEN`` overrides the stored token; ``fmforge
logout URL`` forgets it."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fmforge.access.control import AccessControl
from fmforge.access.policy import PolicySpec
from fmforge.cli.app import app as cli
from fmforge.repository import Repository
from tests.hostile.harness import cli_refused
from tests.integration.server.conftest import ui_process


def fm(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "fmforge" / "credentials.toml"


@pytest.fixture
def tokens(repo: Repository) -> dict[str, str]:
    control = AccessControl(repo)
    admin = control.bootstrap(token=True)
    assert admin is not None
    control.set_policy(PolicySpec(), "test")
    control.add_principal("user:ann")
    return {"admin": admin.token, "ann": control.issue_token("user:ann").token}


@pytest.fixture
def url(repo: Repository, tokens: dict[str, str]) -> Iterator[str]:
    with ui_process(repo.root) as served:
        yield served


def test_login_checks_and_stores_the_token_0600_and_never_prints_it(
    url: str, tokens: dict[str, str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = fm("login", url + "/", "--token-stdin", input=tokens["ann"] + "\n")
    assert done.exit_code == 0, done.output
    assert "as user:ann" in done.output
    assert tokens["ann"] not in done.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    stored = tomllib.loads(config.read_text())
    assert stored == {url: {"token": tokens["ann"], "principal": "user:ann"}}
    # typed at the prompt (hidden), for another server name of the same machine
    other = url.replace("127.0.0.1", "localhost")
    done = fm("login", other, input=tokens["admin"] + "\n")
    assert done.exit_code == 0, done.output
    assert tokens["admin"] not in done.output
    assert set(tomllib.loads(config.read_text())) == {url, other}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    # whoami: the stored token, or FMFORGE_TOKEN over it
    assert fm("whoami", url).output.strip() == "user:ann"
    monkeypatch.setenv("FMFORGE_TOKEN", tokens["admin"])
    assert fm("whoami", url).output.strip() == "user:tester@fmforge"
    monkeypatch.delenv("FMFORGE_TOKEN")
    # logout forgets it; a second time there is nothing to forget
    assert fm("logout", url).exit_code == 0
    assert set(tomllib.loads(config.read_text())) == {other}
    again = fm("logout", url)
    assert again.exit_code == 1
    assert "no token stored" in again.stderr
    assert "no token for" in fm("whoami", url).stderr


@pytest.mark.parametrize(
    "token", ["fmf_" + "A" * 43, "not-a-token"], ids=["unknown token", "malformed"]
)
def test_a_token_the_server_refuses_is_not_stored_nor_printed(
    url: str, tokens: dict[str, str], config: Path, token: str
) -> None:
    done = fm("login", url, "--token-stdin", input=token + "\n")
    assert done.exit_code == 1
    assert "refused the token" in done.stderr
    assert token not in done.output
    assert len(done.stderr.strip().splitlines()) == 1
    assert not config.exists()


def test_a_server_without_access_control_is_not_logged_in_to(tmp_path: Path, config: Path) -> None:
    (tmp_path / "open").mkdir()
    with Repository.init(tmp_path / "open") as repo, ui_process(repo.root) as url:
        done = fm("login", url, "--token-stdin", input="fmf_" + "B" * 43 + "\n")
    assert done.exit_code == 1
    assert "access control off" in done.stderr
    assert not config.exists()


def test_a_credentials_file_others_may_read_is_refused(
    url: str, tokens: dict[str, str], config: Path
) -> None:
    assert fm("login", url, "--token-stdin", input=tokens["ann"] + "\n").exit_code == 0
    config.chmod(0o644)
    done = fm("whoami", url)
    assert done.exit_code == 1
    assert "chmod 600" in done.stderr
    assert tokens["ann"] not in done.output


@pytest.mark.parametrize(
    ("given", "contains"),
    [
        ("ftp://example.org", "not a server URL"),
        ("example.org", "not a server URL"),
        ("http://ann:pw@example.org", "with a user or password"),
        ("http://example.org/api", "no path"),
        ("http://example.org:99999", "port"),
    ],
)
def test_a_bad_url_is_refused(repo: Repository, config: Path, given: str, contains: str) -> None:
    cli_refused(repo.root, "login", given, "--token-stdin", stdin="fmf_x\n", contains=contains)
    assert not config.exists()
