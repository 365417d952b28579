"""A real `fmforge ui` process on a free port, over the test's repository."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fmforge.repository import Repository


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ui_process(root: Path, *extra: str) -> Iterator[str]:
    """A real `fmforge ui` process over ``root`` on a free port; its URL once it answers (any
    answer, a 401 from a server with access control on included)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(root), "ui", "--port", str(port),
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


@pytest.fixture
def server(repo: Repository, request: pytest.FixtureRequest) -> Iterator[str]:
    """The server's URL; ``@pytest.mark.ui_args(...)`` adds options to `fmforge ui`."""
    marker = request.node.get_closest_marker("ui_args")
    extra = [str(a) for a in marker.args] if marker else []
    with ui_process(repo.root, *extra) as url:
        yield url
