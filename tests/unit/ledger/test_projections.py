from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from fmforge.errors import ProjectionError
from fmforge.ledger import Event, NewEvent, Projection, ProjectionRunner, handles, open_event_store
from fmforge.ledger.store import EventStore


class Balances(Projection[dict[str, int]]):
    name = "balances"
    tables = ("balances",)

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER NOT NULL)")

    def read(self, db: sqlite3.Connection) -> dict[str, int]:
        return dict(db.execute("SELECT account, amount FROM balances").fetchall())

    @handles("Deposited", "Withdrew")
    def apply(self, db: sqlite3.Connection, event: Event) -> None:
        if event.data["n"] == self.fail_on:
            raise ValueError("boom")
        sign = 1 if event.type == "Deposited" else -1
        db.execute(
            "INSERT INTO balances VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET amount = amount + excluded.amount",
            (event.stream, sign * event.data["amount"]),
        )


def fill(store: EventStore, count: int) -> None:
    events = [
        NewEvent("Deposited" if n % 3 else "Withdrew", {"n": n, "amount": n}) for n in range(count)
    ]
    for start in range(0, count, 500):
        for n, event in enumerate(events[start : start + 500], start):
            store.append(f"acct/{n % 5}", event)
    store.append("noise", NewEvent("Ignored"))


def expected(count: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    for n in range(count):
        key = f"acct/{n % 5}"
        totals[key] = totals.get(key, 0) + (n if n % 3 else -n)
    return totals


def table(runner: ProjectionRunner) -> dict[str, int]:
    return dict(runner.db.execute("SELECT account, amount FROM balances").fetchall())


@pytest.fixture
def store(tmp_path: Path):
    with open_event_store(str(tmp_path / "ledger.db")) as store:
        yield store


class TestProjectionRunner:
    def test_run_is_incremental_and_rebuild_is_identical(self, store, tmp_path: Path) -> None:
        fill(store, 300)
        runner = ProjectionRunner(store, tmp_path / "views.db")
        assert runner.run(Balances()) == 300
        assert table(runner) == expected(300)
        store.append("acct/0", NewEvent("Deposited", {"n": -1, "amount": 1000}))
        assert runner.run(Balances()) == 1
        assert runner.position(Balances()) == store.head().seq
        before = table(runner)
        assert runner.rebuild(Balances()) == 301
        assert table(runner) == before

    def test_failed_handler_rolls_back_its_batch_and_checkpoint(self, store, tmp_path) -> None:
        fill(store, 250)
        runner = ProjectionRunner(store, tmp_path / "views.db")
        with pytest.raises(ProjectionError) as caught:
            runner.run(Balances(fail_on=120), batch_size=100)
        assert caught.value.projection == "balances"
        assert runner.position(Balances()) == 100
        assert table(runner) == expected(100)
        runner.run(Balances(), batch_size=100)
        assert table(runner) == expected(250)

    def test_version_bump_rebuilds(self, store, tmp_path: Path) -> None:
        fill(store, 50)
        runner = ProjectionRunner(store, tmp_path / "views.db")
        runner.run(Balances())

        class BalancesV2(Balances):
            version = 2

        runner.db.execute("UPDATE balances SET amount = 0")  # stale rows must be replaced
        assert runner.run(BalancesV2()) == 50
        assert table(runner) == expected(50)

    @pytest.mark.slow
    def test_kill_nine_mid_batch_loses_and_duplicates_nothing(self, store, tmp_path) -> None:
        fill(store, 3000)
        views = tmp_path / "views.db"
        process = multiprocessing.get_context("spawn").Process(
            target=_run_and_die, args=(str(store.path), str(views), 1700)
        )
        process.start()
        process.join(60)
        assert process.exitcode == 9
        runner = ProjectionRunner(store, views)
        assert runner.position(Balances()) == 1500  # batches of 500: the 4th died mid-way
        runner.run(Balances())
        assert table(runner) == expected(3000)


class _DieAt(Balances):
    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at = die_at

    def apply(self, db: sqlite3.Connection, event: Event) -> None:
        if event.data["n"] == self.die_at:
            import os

            os._exit(9)
        super().apply(db, event)


def _run_and_die(ledger: str, views: str, die_at: int) -> None:
    with open_event_store(ledger) as store:
        ProjectionRunner(store, views).run(_DieAt(die_at), batch_size=500)


def test_views_from_many_threads_catch_up_once_and_read_whole_batches(store, tmp_path) -> None:
    """Threads asking for a view while events arrive: each event is applied exactly once,
    nothing fails, and every read shows the projection after some whole number of events."""
    runner = ProjectionRunner(store, tmp_path / "views.db")
    prefixes = {frozenset(expected(n).items()) for n in range(1201)}
    seen: list[dict[str, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(runner.view(Balances))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(6)]
    for thread in readers:
        thread.start()
    for n in range(1200):
        store.append(f"acct/{n % 5}", NewEvent("Deposited" if n % 3 else "Withdrew",
                                                {"n": n, "amount": n}))  # fmt: skip
    done.set()
    for thread in readers:
        thread.join()
    assert not errors, errors[:3]
    assert runner.view(Balances) == expected(1200)
    assert len(seen) > 10
    assert all(frozenset(s.items()) in prefixes for s in seen)
    runner.close()
