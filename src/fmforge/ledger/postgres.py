"""PostgreSQL ledger backend, for teams that share one ledger.

Gap-free seq: every write transaction first locks the single head row (``SELECT ... FOR UPDATE``),
allocates the next seqs from it and updates it before committing. Writers therefore commit in seq
order, and no reader can see seq n+1 before seq n. Rows go in with binary ``COPY``. A
``pg_notify`` inside the transaction wakes subscribers (LISTEN) when it commits.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.copy import QueuedLibpqWriter

from fmforge.errors import BackendUnavailable, LedgerLocked, UniqueViolation
from fmforge.ledger.events import GENESIS_HASH, ROW_COLUMNS, RawRow
from fmforge.ledger.records import Head, RowQuery
from fmforge.ledger.registry import EventRegistry
from fmforge.ledger.sqlite import prefix_upper_bound
from fmforge.ledger.store import EventStore
from fmforge.ledger.upcasting import UpcasterRegistry
from fmforge.settings import redact_url

CHANNEL = "fmforge_events"
_PAGE = 5000
_COPY_TYPES = [
    "bigint", "text", "text", "bigint", "text", "integer",
    "bytea", "bytea", "text", "text", "bytea", "bytea", "bytea",
]  # fmt: skip
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS fmforge_events (
    seq            BIGINT  PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    stream         TEXT    COLLATE "C" NOT NULL,
    version        BIGINT  NOT NULL,
    type           TEXT    COLLATE "C" NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BYTEA,
    meta           BYTEA   NOT NULL,
    key_id         TEXT,
    refs           TEXT    NOT NULL DEFAULT '',
    payload_hash   BYTEA   NOT NULL,
    prev_hash      BYTEA   NOT NULL,
    hash           BYTEA   NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX IF NOT EXISTS fmforge_events_by_type ON fmforge_events (type, seq);
CREATE TABLE IF NOT EXISTS fmforge_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash BYTEA   NOT NULL
);
INSERT INTO fmforge_head (id, seq, hash) VALUES (1, 0, '\\x{GENESIS_HASH.hex()}')
ON CONFLICT (id) DO NOTHING;
"""
_COLUMNS = ", ".join(ROW_COLUMNS)


def fast_bytes_dumper(conn: psycopg.Connection[Any]) -> None:
    """Dump ``bytea`` columns with psycopg's C bytes dumper.

    psycopg's DB-API module registers a pure-Python ``Binary`` dumper for the bytea OID last, so
    ``COPY ... set_types([... "bytea"])`` would otherwise run Python code for every value.
    """
    conn.adapters.register_dumper(bytes, conn.adapters.get_dumper(bytes, PyFormat.BINARY))


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def head(self) -> Head:
        row = self._conn.execute(
            "SELECT seq, hash FROM fmforge_head WHERE id = 1 FOR UPDATE"
        ).fetchone()
        assert row is not None
        return Head(row[0], bytes(row[1]))

    def find_events(self, event_ids: Sequence[str]) -> dict[str, tuple[int, str, int, str, bytes]]:
        rows = self._conn.execute(
            "SELECT event_id, seq, stream, version, type, payload_hash FROM fmforge_events "
            "WHERE event_id = ANY(%s)",
            (list(event_ids),),
        )
        return {r[0]: (r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows}

    def stream_version(self, stream: str) -> int:
        row = self._conn.execute(
            "SELECT max(version) FROM fmforge_events WHERE stream = %s", (stream,)
        ).fetchone()
        return int(row[0] or 0) if row else 0

    def insert(self, rows: Iterable[RawRow], count: int) -> None:
        cursor = self._conn.cursor()
        try:
            # The queued writer sends rows from a second thread, so the server indexes one
            # block while Python encodes the next.
            with cursor.copy(
                f"COPY fmforge_events ({_COLUMNS}) FROM STDIN (FORMAT BINARY)",
                writer=QueuedLibpqWriter(cursor),
            ) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation as exc:
            raise UniqueViolation(str(exc).splitlines()[0]) from None

    def set_head(self, head: Head) -> None:
        self._conn.execute(
            "UPDATE fmforge_head SET seq = %s, hash = %s WHERE id = 1", (head.seq, head.hash)
        )
        self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(head.seq)))


class _ListenWaiter:
    def __init__(self, store: PostgresEventStore) -> None:
        self._conn = store._connect(autocommit=True)
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))

    def wait(self, timeout: float) -> None:
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        self._conn.close()


class PostgresEventStore(EventStore):
    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 30.0,
        upcasters: UpcasterRegistry | None = None,
        actor: str | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        super().__init__(upcasters=upcasters, actor=actor, registry=registry)
        self.url = url
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect(autocommit=False)
        with self._writer.transaction():
            # Concurrent first opens would race on CREATE TABLE IF NOT EXISTS.
            self._writer.execute("SELECT pg_advisory_xact_lock(hashtext('fmforge_schema'))")
            self._writer.execute(SCHEMA)

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=autocommit, connect_timeout=10)
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(
                f"cannot connect to PostgreSQL ledger {redact_url(self.url)}: {message}"
            ) from None
        fast_bytes_dumper(conn)
        conn.execute(f"SET lock_timeout = '{int(self.busy_timeout * 1000)}ms'")
        if not autocommit:
            conn.commit()
        return conn

    def _reader(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect(autocommit=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _write_transaction(self) -> Iterator[_PostgresTx]:
        try:
            with self._writer.transaction():
                yield _PostgresTx(self._writer)
        except psycopg.errors.LockNotAvailable:
            raise LedgerLocked(
                f"ledger head stayed locked for {self.busy_timeout:g}s by another writer"
            ) from None

    def _iter_rows(self, query: RowQuery) -> Generator[RawRow, None, None]:
        # Keyset pagination: no cursor stays open between pages, so callers may use the store
        # while iterating, and memory stays bounded by one page.
        by_version = query.stream is not None
        down = query.descending
        low = query.from_version if by_version else query.from_seq
        high: int | None = None if by_version else query.to_seq
        remaining = query.limit
        while remaining is None or remaining > 0:
            clauses: list[str] = []
            params: list[object] = []
            column = "version" if by_version else "seq"
            if by_version:
                clauses.append("stream = %s")
                params.append(query.stream)
                if query.to_seq is not None:
                    clauses.append("seq <= %s")
                    params.append(query.to_seq)
            clauses.append(f"{column} >= %s")
            params.append(low)
            if high is not None:
                clauses.append(f"{column} <= %s")
                params.append(high)
            if query.types is not None:
                clauses.append("type = ANY(%s)")
                params.append(list(query.types))
            if query.stream_prefix:
                clauses += ["stream >= %s", "stream < %s"]
                params += [query.stream_prefix, prefix_upper_bound(query.stream_prefix)]
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM fmforge_events WHERE {' AND '.join(clauses)} "
                    f"ORDER BY {column}{' DESC' if down else ''} LIMIT {page}",
                    params,
                )
                .fetchall()
            )
            for row in rows:
                yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)  # type: ignore[misc]
            if len(rows) < page:
                return
            last = rows[-1][3] if by_version else rows[-1][0]
            if down:
                high = last - 1
            else:
                low = last + 1
            if remaining is not None:
                remaining -= len(rows)

    def _read_head(self) -> Head:
        row = self._reader().execute("SELECT seq, hash FROM fmforge_head WHERE id = 1").fetchone()
        assert row is not None
        return Head(row[0], bytes(row[1]))

    def _read_stream_version(self, stream: str) -> int:
        row = (
            self._reader()
            .execute("SELECT max(version) FROM fmforge_events WHERE stream = %s", (stream,))
            .fetchone()
        )
        return int(row[0] or 0) if row else 0

    def _iter_refs(self) -> Iterator[tuple[int, str]]:
        rows = (
            self._reader()
            .execute("SELECT seq, refs FROM fmforge_events WHERE refs != '' ORDER BY seq")
            .fetchall()
        )
        yield from rows

    def read_refs(self, from_seq: int, to_seq: int) -> Iterator[tuple[int, str, str]]:
        rows = (
            self._reader()
            .execute(
                "SELECT seq, stream, refs FROM fmforge_events WHERE seq BETWEEN %s AND %s "
                "AND refs != '' ORDER BY seq",
                (from_seq, to_seq),
            )
            .fetchall()
        )
        yield from rows

    def read_hashes(self, from_seq: int, to_seq: int) -> Iterator[bytes]:
        rows = (
            self._reader()
            .execute(
                "SELECT hash FROM fmforge_events WHERE seq BETWEEN %s AND %s ORDER BY seq",
                (from_seq, to_seq),
            )
            .fetchall()
        )
        return (bytes(row[0]) for row in rows)

    def _count_rows(self) -> int:
        row = self._reader().execute("SELECT count(*) FROM fmforge_events").fetchone()
        return int(row[0]) if row else 0

    def _change_waiter(self, poll_interval: float) -> _ListenWaiter:
        return _ListenWaiter(self)

    def reopen(self) -> PostgresEventStore:
        return PostgresEventStore(
            self.url,
            busy_timeout=self.busy_timeout,
            upcasters=self.upcasters,
            actor=self.actor,
            registry=self.registry,
        )

    def close(self) -> None:
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
