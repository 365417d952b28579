"""Ledger throughput: ours beside raw SQLite / PostgreSQL doing the same writes and reads.

    python benchmarks/ledger.py            # full sizes (about 2-3 minutes on 2 cores)
    python benchmarks/ledger.py --quick    # smaller, for a smoke run

Every baseline writes the same rows into the same table layout (same indexes), durably
(SQLite WAL + synchronous=FULL; PostgreSQL with fsync on), in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, best_of, print_table, rate, timed
from fmforge.ledger import NewEvent, open_event_store
from fmforge.ledger.events import ROW_COLUMNS, RawRow
from fmforge.ledger.sqlite import SCHEMA
from fmforge.ledger.store import EventStore

PAYLOAD = {"step": 0, "loss": 0.4821, "lr": 3e-4, "note": "checkpoint saved", "tags": ["a", "b"]}


def events(n: int, offset: int = 0) -> list[NewEvent]:
    return [NewEvent("MetricsLogged", {**PAYLOAD, "step": offset + i}) for i in range(n)]


def raw_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def rows_of(store: EventStore) -> list[RawRow]:
    return list(store.read_raw())


INSERT = f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * 13)})"


def interleaved(
    rounds: int, ours: Callable[[int], float], raw: Callable[[int], float]
) -> tuple[float, float]:
    """Alternate ours and the baseline round by round (fsync speed drifts on shared disks)."""
    ours_s = raw_s = 0.0
    for r in range(rounds):
        ours_s += ours(r)
        raw_s += raw(r)
    return ours_s, raw_s


def bench_batched(tmp: Path, calls: int, rounds: int = 4) -> tuple[Row, Path]:
    path = tmp / "batched.db"
    store = open_event_store(str(path))
    # Pre-encode the baseline's rows with the store itself: the very same bytes.
    warm = open_event_store(str(tmp / "rows.db"))
    for c in range(calls):
        warm.append("run/1", events(1000, c * 1000))
    rows = rows_of(warm)
    warm.close()
    batches = [events(1000, c * 1000) for c in range(calls)]
    per_round = calls // rounds
    conn = raw_sqlite(tmp / "raw-batched.db")
    gc.freeze()  # the pre-built inputs (ours and the baseline's) are not garbage to scan
    version = 0

    def ours(r: int) -> float:
        nonlocal version
        start = time.perf_counter()
        for batch in batches[r * per_round : (r + 1) * per_round]:
            version = store.append("run/1", batch, expected_version=version).version
        return time.perf_counter() - start

    def raw(r: int) -> float:
        start = time.perf_counter()
        for c in range(r * per_round, (r + 1) * per_round):
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows[c * 1000 : (c + 1) * 1000])
            conn.execute("COMMIT")
        return time.perf_counter() - start

    ours_s, raw_s = interleaved(rounds, ours, raw)
    store.close()
    conn.close()
    ratio = raw_s / ours_s
    n = per_round * rounds * 1000
    return Row(
        "durable batched append, 1000 events/call (version check, idempotency key, hash chain)",
        rate(n, ours_s), f"{rate(n, raw_s)} raw executemany", ratio, ">= 0.6x", ratio >= 0.6,
    ), path  # fmt: skip


def bench_single(tmp: Path, n: int, rounds: int = 5) -> tuple[Row, float]:
    store = open_event_store(str(tmp / "single.db"))
    warm = open_event_store(str(tmp / "single-rows.db"))
    prepared = events(n)
    for event in prepared:
        warm.append("run/1", event)
    rows = rows_of(warm)
    warm.close()
    prepared = events(n)
    conn = raw_sqlite(tmp / "raw-single.db")
    per_round = n // rounds

    def ours(r: int) -> float:
        start = time.perf_counter()
        for event in prepared[r * per_round : (r + 1) * per_round]:
            store.append("run/1", event)
        return time.perf_counter() - start

    def raw(r: int) -> float:
        start = time.perf_counter()
        for row in rows[r * per_round : (r + 1) * per_round]:
            conn.execute("BEGIN")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
        return time.perf_counter() - start

    ours_s, raw_s = interleaved(rounds, ours, raw)
    store.close()
    conn.close()
    ratio = raw_s / ours_s
    total = per_round * rounds
    return Row(
        "durable single-event append, one caller",
        rate(total, ours_s), f"{rate(total, raw_s)} raw one-row transactions", ratio, ">= 0.8x",
        ratio >= 0.8,
    ), total / ours_s  # fmt: skip


def bench_threads(tmp: Path, per_thread: int, rounds: int = 3) -> Row:
    """8 threads with group commit, against one caller on the same store, alternating."""
    store = open_event_store(str(tmp / "threads.db"))
    threads_s = single_s = 0.0
    appended = 0
    commits_before = 0
    for r in range(rounds):
        barrier = threading.Barrier(9)

        def work(worker: int, r: int = r, barrier: threading.Barrier = barrier) -> None:
            prepared = events(per_thread)
            barrier.wait()
            for event in prepared:
                store.append(f"run/{r}/{worker}", event)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        commits_before = store.commits
        start = time.perf_counter()
        barrier.wait()
        for thread in threads:
            thread.join()
        threads_s += time.perf_counter() - start
        group_commits = store.commits - commits_before
        appended += 8 * per_thread
        prepared = events(per_thread)
        start = time.perf_counter()
        for event in prepared:
            store.append(f"single/{r}", event)
        single_s += time.perf_counter() - start
    store.verify()
    store.close()
    single_rate = rounds * per_thread / single_s
    ratio = (appended / threads_s) / single_rate
    return Row(
        f"8 threads appending single events (group commit: "
        f"{8 * per_thread / group_commits:.1f} events/transaction)",
        rate(appended, threads_s), f"{rate(1, 1 / single_rate)} ours, one caller", ratio,
        ">= 10x", ratio >= 10,
    )  # fmt: skip


def bench_replay(path: Path) -> Row:
    store = open_event_store(str(path))
    n = store.count()
    seen = [0]

    def callback(event: object) -> None:
        seen[0] += 1

    def ours() -> None:
        for event in store.read_all():
            callback(event)

    ours_s = best_of(3, ours)
    store.close()
    conn = sqlite3.connect(path)

    def raw() -> None:
        for row in conn.execute("SELECT * FROM events ORDER BY seq"):
            callback(json.loads(row[6]))

    raw_s = best_of(3, raw)
    conn.close()
    ratio = raw_s / ours_s
    return Row(
        "replay of all events to a callback, decoded", rate(n, ours_s),
        f"{rate(n, raw_s)} raw SELECT + json.loads", ratio, ">= 1.0x", ratio >= 1.0,
    )  # fmt: skip


def bench_verify(tmp: Path, n: int) -> Row:
    path = tmp / "verify.db"
    store = open_event_store(str(path))
    for start in range(0, n, 5000):
        store.append(f"run/{start % 7}", events(5000, start))
    store.close()
    # Drop the page cache's advantage as far as we can without root tricks: reopen fresh.
    store = open_event_store(str(path))
    seconds = timed(store.verify)
    store.close()
    return Row(
        f"verify of a {n / 1e6:g}M-event chain from disk (2 worker processes)",
        f"{seconds:.2f} s", "", None, "<= 2 s", seconds <= 2.0,
    )  # fmt: skip


def bench_postgres(calls: int, rounds: int = 5) -> Row:
    """Ours and binary COPY of the very same rows, alternating round by round.

    Why the ratio varied from 0.53x to 0.93x when ours ran first and COPY second: the second
    phase paid for the first's dirty shared buffers (``pg_stat_bgwriter.buffers_backend`` grew
    by 8,192 pages in one run: backends evicting pages themselves) and for the disk's fsync
    drift, and ours is client CPU (encoding and hashing, ~5 us an event) where COPY is server
    CPU, so any other load on the 2 cores moves ours and not the baseline. Alternating rounds
    cancels the first two; the per-round spread is printed so the third shows."""
    import statistics

    import psycopg
    from tests.servers import running_postgres

    from fmforge.ledger.postgres import _COPY_TYPES, fast_bytes_dumper

    with running_postgres() as server:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE warm")
        warm = open_event_store(server.url("warm"))
        for c in range(calls):
            warm.append("run/1", events(1000, c * 1000))
        rows = rows_of(warm)
        warm.close()
        url = server.url()
        store = open_event_store(url)
        batches = [events(1000, c * 1000) for c in range(calls)]
        conn = psycopg.connect(url)
        fast_bytes_dumper(conn)  # the baseline gets the same C dumper as ours
        conn.execute("CREATE TABLE raw_events (LIKE fmforge_events INCLUDING ALL)")
        conn.commit()
        columns = ", ".join(ROW_COLUMNS)
        gc.freeze()
        per_round = calls // rounds
        version = 0
        ratios: list[float] = []
        ours_s = raw_s = 0.0
        for r in range(rounds):
            began = time.perf_counter()
            for batch in batches[r * per_round : (r + 1) * per_round]:
                version = store.append("run/1", batch, expected_version=version).version
            ours_round = time.perf_counter() - began
            began = time.perf_counter()
            for c in range(r * per_round, (r + 1) * per_round):
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        f"COPY raw_events ({columns}) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(_COPY_TYPES)
                    for row in rows[c * 1000 : (c + 1) * 1000]:
                        copy.write_row(row)
            raw_round = time.perf_counter() - began
            ratios.append(raw_round / ours_round)
            ours_s, raw_s = ours_s + ours_round, raw_s + raw_round
        store.close()
        conn.close()
    ratio = raw_s / ours_s
    n = per_round * rounds * 1000
    spread = (
        f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x, median {statistics.median(ratios):.2f}x)"
    )
    return Row(
        "PostgreSQL batched append, 1000 events/call, gap-free seq, alternating rounds" + spread,
        rate(n, ours_s), f"{rate(n, raw_s)} raw binary COPY", ratio, ">= 0.8x", ratio >= 0.8,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL figure")
    args = parser.parse_args()
    calls, singles, per_thread, chain = (
        (20, 300, 100, 100_000) if args.quick else (200, 2000, 500, 1_000_000)
    )
    steps: list[Callable[[], Row]] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fmforge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        row, batched_path = bench_batched(tmp, calls)
        rows.append(row)
        row, _ = bench_single(tmp, singles)
        rows.append(row)
        rows.append(bench_threads(tmp, per_thread))
        if not args.no_postgres:
            rows.append(bench_postgres(calls))
        rows.append(bench_replay(batched_path))
        rows.append(bench_verify(tmp, chain))
    del steps
    print_table("Ledger (benchmarks/ledger.py)", rows)


if __name__ == "__main__":
    main()
