"""Real servers for the backend tests: PostgreSQL from initdb, and moto's S3 HTTP server.

Both listen only on 127.0.0.1 and live in temporary directories.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def _as_user() -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: run it as the 'postgres' (or 'nobody') account."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb) not found; .ci/run installs them")
    prefix, account = _as_user()
    tmp = Path(tempfile.mkdtemp(prefix="fmforge-pg-"))
    data = tmp / "data"
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    port = free_port()
    user = "fmforge"
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust",
         "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={tmp} "
        "-c fsync=on -c max_connections=60"
    )
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(tmp / "log"), "-w", "-t", "60", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield PostgresServer("127.0.0.1", port, user)
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def running_s3() -> Iterator[str]:
    """moto's S3-compatible HTTP server, in its own process on 127.0.0.1; yields its endpoint.

    A separate process keeps the server's memory out of the client's measurements.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto S3 server did not start") from None
            time.sleep(0.05)
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)
