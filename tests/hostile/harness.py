"""The hostile-input corpus's one assertion: refused with one line, and nothing changed.

Every case hands fmforge a bad file, query, name or request and checks three things:
the refusal (a non-zero exit, an ``FmforgeError``, or a 4xx with the JSON error body), that the
message is one line naming the problem (no traceback, no 500), and that the repository is
exactly as it was: the same events, the same object files (temporary files included), and
``verify`` still passing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fmforge.cli.app import app
from fmforge.errors import FmforgeError
from fmforge.repository import Repository

runner = CliRunner()


@dataclass(frozen=True)
class Snapshot:
    events: int
    files: frozenset[str]  # every file under .fmforge/objects, temporary ones included


def snapshot(root: Path) -> Snapshot:
    with Repository.open(root) as repo:
        events = repo.ledger.count()
    objects = root / ".fmforge" / "objects"
    files = (
        frozenset(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())
        if objects.is_dir()
        else frozenset()
    )
    return Snapshot(events, files)


def assert_unchanged(root: Path, before: Snapshot) -> None:
    after = snapshot(root)
    assert after.events == before.events, f"events: {before.events} -> {after.events}"
    added = sorted(after.files - before.files)
    removed = sorted(before.files - after.files)
    assert not added, f"object files added: {added}"
    assert not removed, f"object files removed: {removed}"
    with Repository.open(root) as repo:
        repo.verify()


@contextmanager
def unchanged(root: Path) -> Iterator[None]:
    """The block may do anything but change the repository at ``root``."""
    before = snapshot(root)
    yield
    assert_unchanged(root, before)


def one_line(message: str) -> str:
    text = message.strip()
    assert text, "an empty error message"
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, f"not one line:\n{text}"
    return text


def cli_refused(
    root: Path, *args: str, contains: str | None = None, stdin: str | None = None
) -> str:
    """Run ``fmforge --store ROOT ARGS``; assert a non-zero exit with one line on stderr
    naming the problem, and nothing changed. Returns the line."""
    with unchanged(root):
        result = runner.invoke(app, ["--store", str(root), *args], input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected {type(result.exception).__name__}") from (
                result.exception
            )
        assert result.exit_code != 0, f"exit 0 for {args}:\n{result.output}"
        line = one_line(result.stderr)
        assert line.startswith("fmforge: error: "), line
    if contains is not None:
        assert contains.lower() in line.lower(), f"{contains!r} not in {line!r}"
    return line


def api_refused(
    root: Path,
    call: Callable[[], Any],
    error: type[FmforgeError] = FmforgeError,
    contains: str | None = None,
) -> FmforgeError:
    """``call()`` raises ``error`` with a one-line message; nothing changed."""
    with unchanged(root), pytest.raises(error) as caught:
        call()
    line = one_line(str(caught.value))
    if contains is not None:
        assert contains.lower() in line.lower(), f"{contains!r} not in {line!r}"
    return caught.value


def http_refused(
    response: Any, status: int | None = None, contains: str | None = None
) -> dict[str, Any]:
    """A 4xx answer in the one error shape ``{"error_code", "message", ...}``."""
    code = response.status_code
    assert 400 <= code < 500, f"HTTP {code}: {response.text[:500]}"
    if status is not None:
        assert code == status, f"HTTP {code}, expected {status}: {response.text[:500]}"
    body = json.loads(response.text)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error_code"), str), body
    line = one_line(body["message"])
    if contains is not None:
        assert contains.lower() in line.lower(), f"{contains!r} not in {line!r}"
    return body


def openai_refused(
    response: Any, status: int | None = None, contains: str | None = None
) -> dict[str, Any]:
    """A 4xx answer in OpenAI's error object ``{"error": {"message", "type", "param",
    "code"}}`` (the serving app's shape)."""
    code = response.status_code
    assert 400 <= code < 500, f"HTTP {code}: {response.text[:500]}"
    if status is not None:
        assert code == status, f"HTTP {code}, expected {status}: {response.text[:500]}"
    body = json.loads(response.text)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["code"], str), error
    assert isinstance(error["type"], str), error
    line = one_line(error["message"])
    if contains is not None:
        assert contains.lower() in line.lower(), f"{contains!r} not in {line!r}"
    return error
