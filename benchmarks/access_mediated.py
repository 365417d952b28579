"""The figures of issue 15 that need access control wired in (phase 2), run by
``benchmarks/access.py`` (areas ``read``, ``forget``, ``kill``):

- a 10k-row dataset read by ``read_table`` with access control on (a token authenticated, the
  decision, its ``AccessGranted`` durable before the rows) beside the same read with it off;
- forgetting a subject with 10k rows in a 1M-row dataset (the subject's key destroyed, the
  versions flagged) beside erasing the same rows by rewriting (``data forget --where``: a new
  version without them, the chunks that held them deleted);
- ``kill -9`` of a real ``fmforge ui`` during 1,000 concurrent authenticated reads: after a
  restart, every response that reached a client has its ``AccessGranted`` (matched by the
  ``X-Request-Id`` the response carried).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._report import Row


def _repo(path: Path) -> Any:
    from fmforge.repository import Repository

    path.mkdir(parents=True)
    return Repository.init(path)


def _access_on(repo: Any, reader: str, resource: str) -> str:
    """Access control on (as ``fmforge access init``); a token of ``reader``, a viewer."""
    from fmforge.access.control import AccessControl
    from fmforge.access.policy import PolicySpec

    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "benchmark")
    control.add_principal(reader)
    control.grant(reader, resource, role="viewer")
    return control.issue_token(reader).token


def _table(rows: int, subjects: int, subject_rows: int = 0) -> Any:
    import pyarrow as pa

    users = [f"s{i % subjects}" for i in range(rows - subject_rows)] + ["forget-me"] * subject_rows
    return pa.table({
        "user": users,
        "email": [f"{u}@example.org" for u in users],
        "text": [f"comment {i} about nothing in particular" for i in range(rows)],
        "label": [i % 2 for i in range(rows)],
    })  # fmt: skip


def bench_read(tmp: Path) -> list[Row]:
    import pyarrow.parquet as pq

    from fmforge.access.mediation import TOKEN_ENV
    from fmforge.data import add_dataset, read_table

    repo = _repo(tmp / "read")
    pq.write_table(_table(10_000, 500), tmp / "read.parquet")
    add_dataset(repo, "yt", tmp / "read.parquet")

    def median_read() -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            read_table(repo, "yt")
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    median_read()  # warm
    off = median_read()
    token = _access_on(repo, "user:reader", "dataset/yt")
    os.environ[TOKEN_ENV] = token
    try:
        read_table(repo, "yt")  # the first decision compiles the policy
        before = repo.ledger.head().seq
        on = median_read()
        audited = sum(1 for e in repo.ledger.read_all(before + 1) if e.type == "AccessGranted")
    finally:
        del os.environ[TOKEN_ENV]
    from fmforge.tracking.events import RunHeartbeat

    appends = []
    for _ in range(30):  # what the audit event alone costs: one durable append
        start = time.perf_counter()
        repo.record("run/bench", [RunHeartbeat({"time": 1.0})])
        appends.append(time.perf_counter() - start)
    append = statistics.median(appends)
    repo.close()
    assert audited == 30, audited
    return [
        Row("10k-row dataset read, auth + audit on vs off", f"{on * 1000:.2f} ms",
            f"{off * 1000:.2f} ms (off)", off / on, ">= 0.95x", off / on >= 0.95),
        Row("  one durable ledger append (the audit event's share)", f"{append * 1000:.2f} ms",
            "", None, "", None),
    ]  # fmt: skip


def bench_forget(tmp: Path, rows: int, subject_rows: int) -> list[Row]:
    import pyarrow.parquet as pq

    from fmforge.data import add_dataset
    from fmforge.data.lineage import forget
    from fmforge.data.subjects import forget_subject, tag_dataset

    repo = _repo(tmp / "forget")
    tag_dataset(repo, "people", pii=["email"], subject_id="user")
    pq.write_table(_table(rows, 1000, subject_rows), tmp / "people.parquet")
    start = time.perf_counter()
    add_dataset(repo, "people", tmp / "people.parquet")
    added = time.perf_counter() - start
    start = time.perf_counter()
    forget_subject(repo, "forget-me", reason="benchmark")
    shredded = time.perf_counter() - start
    # the baseline: the same number of rows of another subject erased by rewriting
    plain = _repo(tmp / "forget-plain")
    pq.write_table(_table(rows, 1000, subject_rows), tmp / "plain.parquet")
    add_dataset(plain, "people", tmp / "plain.parquet")
    start = time.perf_counter()
    forget(plain, "people", "\"user\" = 'forget-me'", reason="benchmark")
    rewritten = time.perf_counter() - start
    repo.close()
    plain.close()
    size = f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows // 1000}k"
    return [
        Row(f"forget a subject with {subject_rows // 1000}k rows in a {size}-row dataset",
            f"{shredded * 1000:.1f} ms", f"{rewritten * 1000:.0f} ms (forget --where)",
            rewritten / shredded, "<= 1 s", shredded <= 1.0),
        Row(f"  (that dataset added, its cells sealed per subject: {size} rows)",
            f"{added:.1f} s", "", None, "", None),
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_kill(tmp: Path, requests: int = 1000) -> list[Row]:
    import pyarrow.parquet as pq

    from fmforge.data import add_dataset
    from fmforge.repository import Repository

    repo = _repo(tmp / "kill")
    pq.write_table(_table(200, 50), tmp / "kill.parquet")
    add_dataset(repo, "yt", tmp / "kill.parquet")
    token = _access_on(repo, "user:reader", "dataset/yt")
    root = repo.root
    repo.close()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(root), "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/datasets/yt/rows?limit=50"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
        except urllib.error.HTTPError:
            break  # 401: up
        except OSError:
            time.sleep(0.2)
    received: list[str] = []
    done = [0]

    def read(_: int) -> None:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                if response.status == 200 and body:
                    received.append(response.headers["X-Request-Id"])
        except OSError:
            pass
        done[0] += 1

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(read, i) for i in range(requests)]
        while len(received) < requests // 3 and not all(f.done() for f in futures):
            time.sleep(0.005)
        server.send_signal(signal.SIGKILL)
        server.wait()
    with Repository.open(root) as reopened:
        audited = {
            e.data.get("request_id") for e in reopened.ledger.read_all(types=("AccessGranted",))
        }
        reopened.verify()
    missing = [r for r in received if r not in audited]
    return [Row(f"kill -9 during {requests} concurrent reads: responses received, audited",
                f"{len(received) - len(missing)} of {len(received)}",
                f"{requests} sent", None, "all", not missing)]  # fmt: skip
