from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fmforge.repository import Repository
from tests.servers import PostgresServer, postgres_bindir, running_postgres, running_s3

_databases = itertools.count()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer setting may leak into a test."""
    for name in list(os.environ):
        if name.startswith("FMFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FMFORGE_USER", "tester@fmforge")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI: .ci/run should have installed them")
        pytest.skip("PostgreSQL binaries (initdb) not installed; `.ci/run` installs them")
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url(name)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with running_s3() as endpoint:
        yield endpoint


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    with Repository.init(tmp_path) as repository:
        yield repository
