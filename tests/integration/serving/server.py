"""A real ``fmforge serve`` process on a free port."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port


@contextmanager
def running_serve(
    root: Path, base: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``fmforge --store ROOT serve BASE ARGS`` until the block ends; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(root), "serve", base, "--port",
         str(port), "--threads", "1", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                err = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"fmforge serve did not start:\n{err}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        finally:
            if process.stderr:
                process.stderr.close()
