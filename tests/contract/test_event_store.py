"""One contract for every ledger backend, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from fmforge.errors import (
    BackendUnavailable,
    ChainBroken,
    IdempotencyConflict,
    ImportMismatch,
    InvalidEvent,
    StreamVersionConflict,
    UpcasterError,
)
from fmforge.ledger import (
    GENESIS_HASH,
    EventStore,
    NewEvent,
    UpcasterRegistry,
    new_event_id,
    open_event_store,
)
from tests.workers import append_many


class EventStoreContract:
    """Subclasses provide ``url`` and ``raw_sql`` for their backend."""

    events_table: ClassVar[str]
    head_table: ClassVar[str]

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    def raw_sql(self, url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
        raise NotImplementedError

    @pytest.fixture
    def store(self, url: str) -> Iterator[EventStore]:
        with open_event_store(url, actor="alice@test") as store:
            yield store

    # ---- append and read ----------------------------------------------------------------

    def test_round_trip_keeps_every_field(self, store: EventStore) -> None:
        event = NewEvent(
            "ModelCommitted",
            {"name": "sentiment", "params": 22_700_000, "lr": 1e-4, "tags": ["a", "é"]},
            refs=("ab" * 32,),
            meta={"causation_id": "cmd-1"},
        )
        result = store.append("model/sentiment", [event])
        assert result.positions == ((1, 1),)
        (read,) = store.read_stream("model/sentiment")
        assert read.seq == 1
        assert read.version == 1
        assert read.stream == "model/sentiment"
        assert read.event_id == event.event_id
        assert read.type == "ModelCommitted"
        assert read.schema_version == 1
        assert read.data == event.data
        assert read.refs == ("ab" * 32,)
        assert read.meta["actor"] == "alice@test"
        assert read.meta["causation_id"] == "cmd-1"
        assert read.meta["correlation_id"] == event.event_id
        assert read.time.endswith("Z")
        assert read.prev_hash == GENESIS_HASH
        assert len(read.hash) == 32

    def test_seq_is_dense_across_streams_and_versions_per_stream(self, store: EventStore) -> None:
        for i in range(5):
            store.append(f"s/{i % 2}", [NewEvent("Ticked", {"i": i})])
        events = list(store.read_all())
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert [e.version for e in events] == [1, 1, 2, 2, 3]
        assert store.stream_version("s/0") == 3
        assert store.stream_version("nope") == 0
        assert store.head().seq == 5
        assert store.head().hash == events[-1].hash
        for prev, event in itertools.pairwise(events):
            assert event.prev_hash == prev.hash

    def test_multi_event_append_is_atomic(self, store: EventStore) -> None:
        store.append("s", [NewEvent("A"), NewEvent("B")])
        with pytest.raises(StreamVersionConflict):
            store.append("s", [NewEvent("C"), NewEvent("D"), NewEvent("E")], expected_version=1)
        assert store.head().seq == 2
        result = store.append("s", [NewEvent("C"), NewEvent("D")], expected_version=2)
        assert result.positions == ((3, 3), (4, 4))

    def test_version_conflict_names_the_actual_version(self, store: EventStore) -> None:
        store.append("s", NewEvent("A"), expected_version=0)
        with pytest.raises(StreamVersionConflict) as caught:
            store.append("s", NewEvent("B"), expected_version=0)
        assert caught.value.actual_version == 1
        assert caught.value.expected_version == 0
        assert "version 1" in str(caught.value)

    def test_idempotent_retry_returns_original_positions(self, store: EventStore) -> None:
        events = [NewEvent("A", {"x": 1}), NewEvent("B", {"x": 2})]
        first = store.append("s", events, expected_version=0)
        store.append("other", NewEvent("C"))
        retry = store.append("s", events, expected_version=0)
        assert retry.deduplicated
        assert retry.positions == first.positions
        assert store.count() == 3

    def test_reused_event_id_with_other_content_is_refused(self, store: EventStore) -> None:
        event_id = new_event_id()
        store.append("s", NewEvent("A", {"x": 1}, event_id=event_id))
        with pytest.raises(IdempotencyConflict):
            store.append("s", NewEvent("A", {"x": 2}, event_id=event_id))
        with pytest.raises(IdempotencyConflict):
            store.append("elsewhere", NewEvent("A", {"x": 1}, event_id=event_id))
        assert store.count() == 1

    @pytest.mark.parametrize(
        ("stream", "event", "message"),
        [
            ("s", NewEvent("A", {"x": float("nan")}), "NaN"),
            ("s", NewEvent("A", {"x": {1, 2}}), "not plain JSON"),
            ("s", NewEvent("bad type!"), "invalid event type"),
            ("", NewEvent("A"), "invalid stream"),
            ("s", NewEvent("A", event_id="not-a-uuid"), "invalid event_id"),
            ("s", NewEvent("A", refs=("../etc/passwd",)), "object reference"),
            ("s", NewEvent("A", key_id="subject\x001"), "invalid key_id"),
        ],
    )
    def test_bad_events_are_refused_with_a_reason(
        self, store: EventStore, stream: str, event: NewEvent, message: str
    ) -> None:
        with pytest.raises(InvalidEvent, match=message):
            store.append(stream, event)
        assert store.count() == 0

    def test_large_append_with_a_bad_event_writes_nothing(self, store: EventStore) -> None:
        store.append("s", NewEvent("Before"))
        events = [NewEvent("Ticked", {"n": n}) for n in range(300)]
        events[250] = NewEvent("Ticked", {"n": float("inf")})
        with pytest.raises(InvalidEvent, match="NaN or Infinity"):
            store.append("s", events)
        assert store.count() == 1
        assert store.head().seq == 1
        events[250] = NewEvent("Ticked", {"n": 250})
        result = store.append("s", events, expected_version=1)
        assert result.positions[0] == (2, 2)
        assert result.positions[-1] == (301, 301)
        retry = store.append("s", events, expected_version=1)
        assert retry.deduplicated
        assert retry.positions == result.positions
        duplicated = [*events[:100], events[0]]
        with pytest.raises(InvalidEvent, match="twice"):
            store.append("s", duplicated)
        assert store.verify().seq == 301

    def test_read_all_filters(self, store: EventStore) -> None:
        store.append("model/a", [NewEvent("ModelCommitted"), NewEvent("TagCreated")])
        store.append("models-archive/x", NewEvent("ModelCommitted"))
        store.append("dataset/d", NewEvent("DatasetAdded"))
        assert [e.seq for e in store.read_all(types=["ModelCommitted"])] == [1, 3]
        assert [e.seq for e in store.read_all(streams="model/")] == [1, 2]
        assert [e.seq for e in store.read_all(2, to_seq=3)] == [2, 3]
        assert [e.seq for e in store.read_all(limit=2)] == [1, 2]
        assert [e.version for e in store.read_stream("model/a", 2)] == [2]

    def test_reads_page_through_many_events(self, store: EventStore) -> None:
        for start in range(0, 12_000, 4000):
            store.append("bulk", [NewEvent("Ticked", {"n": n}) for n in range(start, start + 4000)])
        assert [e.data["n"] for e in store.read_all()] == list(range(12_000))
        assert sum(1 for _ in store.read_stream("bulk", 5000)) == 7001

    def test_upcasters_apply_on_read_and_leave_storage_alone(self, url: str) -> None:
        with open_event_store(url) as old:
            old.append("s", NewEvent("Renamed", {"name": "x"}))
        upcasters = UpcasterRegistry()
        upcasters.register("Renamed", 1, lambda d: {"title": d["name"]})
        upcasters.register("Renamed", 2, lambda d: {**d, "lang": "en"})
        with open_event_store(url, upcasters=upcasters) as new:
            (event,) = new.read_all()
            assert event.schema_version == 3
            assert event.data == {"title": "x", "lang": "en"}
            assert new.read_raw().__next__()[5] == 1
            new.verify()

    def test_upcaster_chain_with_a_gap_is_refused_at_start(self, url: str) -> None:
        upcasters = UpcasterRegistry()
        upcasters.register("Renamed", 2, lambda d: d)
        with pytest.raises(UpcasterError, match="from schema version"):
            open_event_store(url, upcasters=upcasters)

    def test_referenced_objects(self, store: EventStore) -> None:
        a, b = "a" * 64, "b" * 64
        store.append("s", [NewEvent("X", refs=(a,)), NewEvent("Y"), NewEvent("Z", refs=(a, b))])
        assert store.referenced_objects() == {a: 1, b: 3}

    # ---- subscriptions ------------------------------------------------------------------

    def test_subscribe_catches_up_then_follows_live(self, url: str, store: EventStore) -> None:
        store.append("s", [NewEvent("Old", {"n": n}) for n in range(3)])
        received: list[int] = []

        def writer() -> None:
            with open_event_store(url) as other:
                for n in range(3, 40):
                    other.append("s", NewEvent("New", {"n": n}))
                    if n % 7 == 0:
                        time.sleep(0.02)

        thread = threading.Thread(target=writer)
        with store.subscribe(1, idle_timeout=3.0, poll_interval=0.01) as sub:
            thread.start()
            for event in sub:
                received.append(event.data["n"])
                if len(received) == 40:
                    break
        thread.join()
        assert received == list(range(40))

    def test_subscribe_with_filter_skips_nothing_it_should_deliver(self, store: EventStore) -> None:
        for n in range(30):
            store.append(f"s/{n % 3}", NewEvent("Even" if n % 2 == 0 else "Odd", {"n": n}))
        with store.subscribe(types=["Even"], streams="s/1", idle_timeout=0.2) as sub:
            assert [e.data["n"] for e in sub] == [n for n in range(30) if n % 6 == 4]

    # ---- integrity ----------------------------------------------------------------------

    def test_verify_accepts_an_intact_chain(self, store: EventStore) -> None:
        assert store.verify().seq == 0
        for n in range(50):
            store.append(f"s/{n % 4}", NewEvent("Ticked", {"n": n}))
        head = store.verify()
        assert head.seq == 50
        assert head == store.head()

    def test_verify_in_parallel_agrees(self, store: EventStore) -> None:
        for n in range(0, 3000, 500):
            store.append("s", [NewEvent("Ticked", {"n": i}) for i in range(n, n + 500)])
        assert store.verify(workers=3) == store.head()

    def _ten_events(self, store: EventStore) -> None:
        store.append("s", [NewEvent("Ticked", {"n": n}) for n in range(10)])

    @pytest.mark.parametrize(
        ("tamper", "seq"),
        [
            ("UPDATE {events} SET data = {data} WHERE seq = 4", 4),
            ("UPDATE {events} SET type = 'Forged' WHERE seq = 6", 6),
            ("UPDATE {events} SET meta = {meta} WHERE seq = 2", 2),
            ("DELETE FROM {events} WHERE seq = 5", 5),
            ("UPDATE {events} SET seq = -seq WHERE seq IN (3, 7); "
             "UPDATE {events} SET seq = 7 WHERE seq = -3; "
             "UPDATE {events} SET seq = 3 WHERE seq = -7", 3),
            ("UPDATE {events} SET hash = payload_hash WHERE seq = 8", 8),
        ],
    )  # fmt: skip
    def test_verify_names_the_first_tampered_seq(
        self, url: str, store: EventStore, tamper: str, seq: int
    ) -> None:
        self._ten_events(store)
        data = self.literal(b'{"n":999}')
        meta = self.literal(b'{"actor":"mallory"}')
        for statement in tamper.split("; "):
            self.raw_sql(url, statement.format(events=self.events_table, data=data, meta=meta))
        with pytest.raises(ChainBroken) as caught:
            store.verify()
        assert caught.value.seq == seq

    def test_verify_catches_a_deleted_last_event(self, url: str, store: EventStore) -> None:
        self._ten_events(store)
        self.raw_sql(url, f"DELETE FROM {self.events_table} WHERE seq = 10")
        with pytest.raises(ChainBroken) as caught:
            store.verify()
        assert caught.value.seq == 10

    def test_verify_catches_a_rewritten_head(self, url: str, store: EventStore) -> None:
        self._ten_events(store)
        self.raw_sql(url, f"UPDATE {self.head_table} SET seq = 9")
        with pytest.raises(ChainBroken, match="head") as caught:
            store.verify()
        assert caught.value.seq == 9

    def test_redacted_payload_keeps_the_chain_valid(self, url: str, store: EventStore) -> None:
        self._ten_events(store)
        self.raw_sql(url, f"UPDATE {self.events_table} SET data = NULL WHERE seq = 3")
        assert store.verify().seq == 10
        event = next(store.read_all(3))
        assert event.redacted
        assert event.data == {}

    def test_export_import_reproduces_the_chain(self, url: str, store: EventStore) -> None:
        for n in range(30):
            store.append(f"s/{n % 3}", NewEvent("Ticked", {"n": n, "x": n / 7}, refs=("c" * 64,)))
        records = list(store.export_records())
        fresh_url = self.fresh_url(url)
        with open_event_store(fresh_url) as fresh:
            assert fresh.import_records(records, batch_size=7) == 30
            assert fresh.head() == store.head()
            assert list(fresh.read_raw()) == list(store.read_raw())
            fresh.verify()
            with pytest.raises(ImportMismatch):
                fresh.import_records(records[:1])

    def test_import_refuses_a_forged_record(self, url: str, store: EventStore) -> None:
        self._ten_events(store)
        records = list(store.export_records())
        records[4]["data"] = {"n": 1000}
        with open_event_store(self.fresh_url(url)) as fresh:
            with pytest.raises(ImportMismatch) as caught:
                fresh.import_records(records)
            assert caught.value.seq == 5

    # ---- concurrency --------------------------------------------------------------------

    @pytest.mark.slow
    def test_four_processes_append_without_losing_an_event(
        self, url: str, store: EventStore
    ) -> None:
        context = multiprocessing.get_context("spawn")
        with context.Pool(4) as pool:
            versions = pool.starmap(append_many, [(url, w, 300, 1 + w * 3) for w in range(4)])
        assert versions == [300] * 4
        events = list(store.read_all())
        assert [e.seq for e in events] == list(range(1, 1201))
        assert len({e.event_id for e in events}) == 1200
        for worker in range(4):
            mine = [e.data["n"] for e in events if e.stream == f"worker/{worker}"]
            assert mine == list(range(300))
        assert store.verify().seq == 1200

    def test_group_commit_shares_transactions_between_threads(self, store: EventStore) -> None:
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def append_some(worker: int) -> None:
            try:
                barrier.wait()
                for n in range(40):
                    store.append(f"t/{worker}", NewEvent("Ticked", {"n": n}))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=append_some, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert store.count() == 320
        assert store.commits < 320, "every append paid its own transaction"
        assert store.verify().seq == 320
        for worker in range(8):
            assert [e.data["n"] for e in store.read_stream(f"t/{worker}")] == list(range(40))

    def test_large_and_small_appends_from_threads_interleave_safely(
        self, store: EventStore
    ) -> None:
        barrier = threading.Barrier(6)

        def append_some(worker: int) -> None:
            barrier.wait()
            for n in range(10):
                size = 150 if worker % 2 else 1
                store.append(
                    f"t/{worker}", [NewEvent("Ticked", {"n": n, "i": i}) for i in range(size)]
                )

        threads = [threading.Thread(target=append_some, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.count() == 3 * 10 * 150 + 3 * 10
        assert store.verify().seq == store.count()

    def test_a_failing_request_in_a_group_does_not_sink_the_others(self, store: EventStore) -> None:
        barrier = threading.Barrier(6)
        outcomes: list[str] = []

        def append_one(worker: int) -> None:
            barrier.wait()
            try:
                store.append("shared", NewEvent("Claimed", {"w": worker}), expected_version=0)
                outcomes.append("won")
            except StreamVersionConflict:
                outcomes.append("lost")

        threads = [threading.Thread(target=append_one, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["lost"] * 5 + ["won"]
        assert store.count() == 1

    # ---- backend-specific helpers -------------------------------------------------------

    def literal(self, value: bytes) -> str:
        return f"X'{value.hex()}'"

    def fresh_url(self, url: str) -> str:
        raise NotImplementedError

    # ---- the registry, the write path and the reads other layers need -------------------

    def test_a_registry_closes_domain_streams_to_append_and_validates_record(
        self, url: str
    ) -> None:
        from fmforge.events import REGISTRY
        from fmforge.tracking.events import RunHeartbeat

        with open_event_store(url, actor="alice@test", registry=REGISTRY) as store:
            with pytest.raises(InvalidEvent, match="reserved"):
                store.append("run/r1", RunHeartbeat({"time": 1.0}))
            with pytest.raises(InvalidEvent, match="recorded only by"):
                store.append("notes/x", RunHeartbeat({"time": 1.0}))
            with pytest.raises(InvalidEvent, match="time"):
                store.record(
                    "run/r1", [RunHeartbeat({"time": "soon"})],  # type: ignore[typeddict-item]
                    expected_version=None, actor="bob@test",
                )  # fmt: skip
            assert store.head().seq == 0
            result = store.record(
                "run/r1", [RunHeartbeat({"time": 1.0}), RunHeartbeat({"time": 2.0})],
                expected_version=0, actor="bob@test",
            )  # fmt: skip
            assert result.version == 2
            assert [e.meta["actor"] for e in store.read_stream("run/r1")] == ["bob@test"] * 2
            store.append("notes/x", NewEvent("NoteTaken", {}))
            assert store.read_all(streams="notes/").__next__().meta["actor"] == "alice@test"

    def test_newest_first_reads_and_time_bisection(self, store: EventStore) -> None:
        for n in range(30):
            store.append(f"s/{n % 3}", NewEvent("Ticked", {"n": n}))
        newest = [e.data["n"] for e in store.read_all(descending=True, limit=4)]
        assert newest == [29, 28, 27, 26]
        prefixed = [e.data["n"] for e in store.read_all(streams="s/1", descending=True, limit=3)]
        assert prefixed == [28, 25, 22]
        events = list(store.read_all())
        middle = events[17]
        assert store.first_seq_at(middle.time) <= middle.seq
        assert all(e.time < middle.time for e in events[: store.first_seq_at(middle.time) - 1])
        assert store.first_seq_at("2999-01-01T00:00:00.000000Z") == store.head().seq + 1
        assert store.hash_at(middle.seq) == middle.hash
        assert store.hash_at(10_000) is None

    def test_read_refs_gives_every_event_that_refers_to_objects(self, store: EventStore) -> None:
        a, b = "a" * 64, "b" * 64
        store.append("s", [NewEvent("X", refs=(a,)), NewEvent("Y"), NewEvent("Z", refs=(a, b))])
        store.append("t", NewEvent("W", refs=(b,)))
        assert list(store.read_refs(1, 4)) == [(1, "s", a), (3, "s", f"{a},{b}"), (4, "t", b)]
        assert list(store.read_refs(2, 3)) == [(3, "s", f"{a},{b}")]

    def test_read_hashes_gives_the_recorded_hashes_in_order(self, store: EventStore) -> None:
        store.append("s", [NewEvent("X", {"i": i}) for i in range(30)])
        hashes = list(store.read_hashes(3, 12))
        assert hashes == [store.hash_at(seq) for seq in range(3, 13)]
        assert all(type(h) is bytes for h in hashes)
        assert list(store.read_hashes(29, 99)) == [store.hash_at(29), store.hash_at(30)]


class TestSqliteEventStore(EventStoreContract):
    events_table = "events"
    head_table = "ledger_head"

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        self._tmp = tmp_path
        return str(tmp_path / "ledger.db")

    def raw_sql(self, url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
        conn = sqlite3.connect(url)
        with conn:
            conn.execute(sql, params)
        conn.close()

    def fresh_url(self, url: str) -> str:
        return str(Path(url).with_name("fresh.db"))

    def test_preimages_built_in_sql_match_python(self, store: EventStore) -> None:
        store.append(
            "modèle/ünïcode ✓",
            [
                NewEvent("A", {"text": "naïve \u0000 nul", "n": -1}, key_id="subject-7"),
                NewEvent("B", refs=("d" * 64, "e" * 64), meta={"why": "ß"}),
            ],
        )
        in_sql = list(store.read_chain(1, 2))
        in_python = list(EventStore.read_chain(store, 1, 2))
        assert in_sql == in_python
        assert store.verify().seq == 2

    def test_sqlite_settings_are_durable(self, store: EventStore) -> None:
        conn = store._reader()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

    def test_garbage_file_is_a_clear_error(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(BackendUnavailable, match="cannot open ledger"):
            open_event_store(str(path))


@pytest.mark.postgres
class TestPostgresEventStore(EventStoreContract):
    events_table = "fmforge_events"
    head_table = "fmforge_head"

    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url

    def raw_sql(self, url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def literal(self, value: bytes) -> str:
        return f"'\\x{value.hex()}'::bytea"

    def fresh_url(self, url: str) -> str:
        base, _, name = url.rpartition("/")
        fresh = f"{name}_fresh"
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{fresh}"')
        return f"{base}/{fresh}"

    def test_unreachable_server_is_a_clear_error(self) -> None:
        with pytest.raises(BackendUnavailable, match="cannot connect") as caught:
            open_event_store("postgresql://someone:secret@127.0.0.1:1/db")
        assert "secret" not in str(caught.value)
