"""What a run captures about where it ran: code version, command, interpreter, packages, host."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import blake3


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-4}}`` -> ``{"optim.lr": 1e-4}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _git(*args: str, cwd: Path) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(cwd: Path | None = None) -> dict[str, Any]:
    """The git commit of the working directory and a hash of uncommitted changes, if any."""
    cwd = cwd or Path.cwd()
    head = _git("rev-parse", "HEAD", cwd=cwd)
    if head is None:
        return {"git_commit": None}
    diff = _git("diff", "HEAD", "--binary", cwd=cwd) or b""
    untracked = _git("ls-files", "--others", "--exclude-standard", cwd=cwd) or b""
    dirty = bool(diff or untracked)
    return {
        "git_commit": head.decode().strip(),
        "dirty": dirty,
        "uncommitted_hash": blake3.blake3(diff + b"\0" + untracked).hexdigest() if dirty else None,
    }


def capture_environment() -> dict[str, Any]:
    packages = {
        dist.metadata["Name"].lower(): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    return {
        "code": code_version(),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": dict(sorted(packages.items())),
    }
