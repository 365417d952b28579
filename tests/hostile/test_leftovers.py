"""What a writer killed half-way leaves, and what `fmforge gc` makes of it.

A put killed with SIGKILL leaves its staging file in ``objects/tmp/`` (never a visible object);
`gc` removes such files once older than the grace period and says so, spares younger ones (a
writer may still be filling them), and changes nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fmforge.repository import Repository
from tests.clirunner import fm
from tests.hostile.harness import snapshot

# Puts an endless stream of incompressible chunks, saying when a few are staged.
WRITER = textwrap.dedent("""
    import os, sys, time
    from fmforge.objects import LocalObjectStore

    store = LocalObjectStore(sys.argv[1], chunk_size=1 << 20)

    def chunks():
        for i in range(8):
            yield os.urandom(1 << 20)
        print("staged", flush=True)
        while True:
            time.sleep(1)
            yield b""

    store.put(chunks())
""")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Repository.init(tmp_path).close()
    return tmp_path


def staging_files(root: Path) -> list[Path]:
    return sorted((root / ".fmforge" / "objects" / "tmp").glob("put-*.tmp"))


def test_a_put_killed_by_sigkill_leaves_a_staging_file_gc_removes(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root / ".fmforge" / "objects")],
        stdout=subprocess.PIPE, text=True, env=env,
    ) as writer:  # fmt: skip
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "staged"
            os.kill(writer.pid, signal.SIGKILL)  # kill -9: no cleanup runs
        finally:
            writer.kill()
            writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    (left,) = staging_files(root)
    assert left.stat().st_size >= 8 << 20
    size = left.stat().st_size
    before = snapshot(root)

    code, out = fm(root, "gc")  # the default grace period: a writer may still be at work
    assert code == 0, out
    assert "removed 0 temporary file(s) of interrupted writes, 0 bytes; spared 1" in out
    assert staging_files(root) == [left]

    code, out = fm(root, "gc", "--grace-period", "0", "--dry-run")
    assert code == 0, out
    assert f"would remove 1 temporary file(s) of interrupted writes, {size} bytes" in out
    assert staging_files(root) == [left]

    code, out = fm(root, "gc", "--grace-period", "0")
    assert code == 0, out
    assert f"removed 1 temporary file(s) of interrupted writes, {size} bytes; spared 0" in out
    assert staging_files(root) == []
    after = snapshot(root)
    assert after.events == before.events
    assert after.files == before.files - {f"tmp/{left.name}"}
    with Repository.open(root) as repo:
        repo.verify()


def test_gc_removes_old_staging_files_and_spares_young_ones(root: Path) -> None:
    tmp = root / ".fmforge" / "objects" / "tmp"
    old, young = tmp / "put-aaaa.tmp", tmp / "put-bbbb.tmp"
    old.write_bytes(b"o" * 4096)
    young.write_bytes(b"y" * 10)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    code, out = fm(root, "gc")  # the default grace period is an hour
    assert code == 0, out
    assert "removed 1 temporary file(s) of interrupted writes, 4096 bytes; spared 1" in out
    assert staging_files(root) == [young]


def test_gc_says_nothing_of_staging_when_there_is_none(root: Path) -> None:
    code, out = fm(root, "gc")
    assert code == 0, out
    assert "temporary" not in out
