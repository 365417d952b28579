"""The event store: the contract every ledger backend fulfils, and the logic they share.

Backends (``SqliteEventStore``, ``PostgresEventStore``) supply a write transaction with five
primitives and a row reader; everything else lives here once: encoding, the version and
idempotency checks, the hash chain, group commit, decoding with upcasting, subscriptions,
export/import and verification.

Group commit: every append is a request handed to a leader thread. The first caller to find no
leader becomes it, commits all requests queued by then in one transaction, then hands leadership to
the next waiting caller. A lone caller pays nothing extra; concurrent callers share fsyncs.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from fmforge.errors import (
    IdempotencyConflict,
    ImportMismatch,
    InvalidEvent,
    LedgerError,
    StreamVersionConflict,
    UniqueViolation,
)
from fmforge.ledger.appending import AppendRequest, Chain, Encoder
from fmforge.ledger.events import (
    GENESIS_HASH,
    Event,
    NewEvent,
    RawRow,
    canonical_json,
    chain_preimage,
    decode_json,
    payload_digest,
    row_hash,
    split_refs,
    validate_event_id,
    validate_refs,
    validate_stream,
    validate_type,
)
from fmforge.ledger.registry import EventRegistry
from fmforge.ledger.subscriptions import Subscription
from fmforge.ledger.upcasting import UpcasterRegistry

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_COMMIT = 5000
LAZY_FROM = 64


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class Head:
    """The newest position of the ledger (seq 0 and the genesis hash when empty)."""

    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where the events of one append landed.

    ``deduplicated``: the append was an idempotent retry and nothing was written.
    """

    stream: str
    positions: tuple[tuple[int, int], ...]  # (seq, version) per event, in order
    deduplicated: bool = False

    @property
    def first_seq(self) -> int:
        return self.positions[0][0]

    @property
    def last_seq(self) -> int:
        return self.positions[-1][0]

    @property
    def version(self) -> int:
        """The stream's version after this append."""
        return self.positions[-1][1]


@dataclass(frozen=True, slots=True)
class RowQuery:
    from_seq: int = 1
    to_seq: int | None = None
    types: tuple[str, ...] | None = None
    stream: str | None = None
    stream_prefix: str | None = None
    from_version: int = 1
    limit: int | None = None
    descending: bool = False  # newest first (seq, or version within a stream)


class WriteTransaction(Protocol):
    """What a backend offers inside one atomic, serialised write transaction."""

    def head(self) -> Head: ...

    def find_events(self, event_ids: Sequence[str]) -> dict[str, tuple[int, str, int, str, bytes]]:
        """event_id -> (seq, stream, version, type, payload_hash) for those already stored."""
        ...

    def stream_version(self, stream: str) -> int: ...

    def insert(self, rows: Iterable[RawRow], count: int) -> None:
        """Insert ``count`` rows, consuming ``rows`` in order."""
        ...

    def set_head(self, head: Head) -> None: ...


class ChangeWaiter(Protocol):
    def wait(self, timeout: float) -> None:
        """Return when the ledger may have changed, or after ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


class EventStore(ABC):
    """An append-only, hash-chained ledger of events, grouped in streams."""

    url: str

    def __init__(
        self,
        *,
        upcasters: UpcasterRegistry | None = None,
        actor: str | None = None,
        registry: EventRegistry | None = None,
    ):
        self.registry = registry
        """Domain event types: with one, ``append`` refuses their streams and types (they are
        written through ``Repository.record``, which validates them)."""
        self.upcasters = upcasters or UpcasterRegistry()
        self.upcasters.validate()
        # Upcasters are registered before a store opens (validated here, as a whole).
        self._upcasting = bool(self.upcasters)
        self.actor = actor or default_actor()
        self._queue: list[AppendRequest] = []
        self._queue_lock = threading.Lock()
        self._leader_active = False
        # Held by whoever runs a write transaction in this process (the group-commit leader,
        # or an import), so one connection never runs two transactions at once.
        self._write_mutex = threading.Lock()
        self.commits = 0
        """Write transactions this object has committed (group commit makes it < appends)."""
        self.commit_delay = 0.0005
        """Seconds a group-commit leader may wait for concurrent writers to queue up."""
        self._last_group_size = 1

    # ---- backend primitives -------------------------------------------------------------

    @abstractmethod
    def _write_transaction(self) -> AbstractContextManager[WriteTransaction]: ...

    @abstractmethod
    def _iter_rows(self, query: RowQuery) -> Generator[RawRow, None, None]: ...

    @abstractmethod
    def _read_head(self) -> Head: ...

    @abstractmethod
    def _read_stream_version(self, stream: str) -> int: ...

    @abstractmethod
    def _iter_refs(self) -> Iterator[tuple[int, str]]:
        """(seq, comma-joined digests) of every event that refers to objects, in seq order."""

    @abstractmethod
    def read_refs(self, from_seq: int, to_seq: int) -> Iterator[tuple[int, str, str]]:
        """(seq, stream, comma-joined digests) of the events in the range that refer to
        objects, in seq order, without decoding them."""

    @abstractmethod
    def _change_waiter(self, poll_interval: float) -> ChangeWaiter: ...

    @abstractmethod
    def _count_rows(self) -> int: ...

    @abstractmethod
    def reopen(self) -> EventStore:
        """A new store object on the same ledger (new connections), e.g. for a worker process."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing ------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent] | NewEvent,
        *,
        expected_version: int | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically, as ``self.actor``.

        ``expected_version``: ``None`` skips the check, ``0`` requires a new stream, ``n`` requires
        the stream to be at version ``n`` (else ``StreamVersionConflict``). Appending events whose
        ``event_id``s are already recorded returns their original positions and writes nothing.
        With a registry, this records outside facts only: a domain's streams and event types
        are refused (``Repository.record`` writes those).
        """
        if isinstance(events, NewEvent):
            events = [events]
        validate_stream(stream)
        if self.registry is not None:
            for event in events:
                if type(event) is not NewEvent:
                    raise InvalidEvent(f"expected NewEvent, got {type(event).__name__}")
                self.registry.check_outside(stream, event)
        return self._append(stream, events, expected_version, self.actor)

    def record(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None,
        actor: str,
    ) -> AppendResult:
        """The domain write path's last step (``Repository.record`` is the one caller): every
        event validated against its declared type, then appended with ``actor`` in its meta."""
        validate_stream(stream)
        if self.registry is None:
            raise InvalidEvent("this ledger was opened without an event registry")
        for event in events:
            if type(event) is not NewEvent:
                raise InvalidEvent(f"expected NewEvent, got {type(event).__name__}")
            self.registry.validate(stream, event)
        return self._append(stream, events, expected_version, actor)

    def _append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        actor: str,
    ) -> AppendResult:
        if not events:
            raise InvalidEvent("append needs at least one event")
        if len(events) > MAX_EVENTS_PER_COMMIT:
            raise InvalidEvent(
                f"{len(events)} events in one append; at most {MAX_EVENTS_PER_COMMIT} per call"
            )
        if expected_version is not None and expected_version < 0:
            raise InvalidEvent(f"expected_version must be >= 0, got {expected_version}")
        encoder = Encoder(actor, events[0])
        if len(events) >= LAZY_FROM:
            # Large appends are encoded while their rows stream into the backend, so our CPU
            # work overlaps the database's; such a request is committed in a group of its own.
            for event in events:
                if type(event) is not NewEvent:
                    raise InvalidEvent(f"expected NewEvent, got {type(event).__name__}")
            if len({e.event_id for e in events}) != len(events):
                raise InvalidEvent("an event_id appears twice in one append")
            request = AppendRequest(stream, [], expected_version, encoder, events)
        else:
            request = AppendRequest(stream, encoder.encode_all(events), expected_version)
        return self._submit(request)

    def _submit(self, request: AppendRequest) -> AppendResult:
        with self._queue_lock:
            self._queue.append(request)
            lead = not self._leader_active
            if lead:
                self._leader_active = True
            else:
                request.done = threading.Event()
        if not lead:
            assert request.done is not None
            request.done.wait()
            lead = request.lead  # handed leadership: our request heads the queue
        if lead:
            self._lead()  # a leader's own request is always in the group it commits
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        # Commit delay (PostgreSQL's commit_delay): when the last group had several writers,
        # give them a moment to queue up again, so one fsync serves them all.
        expected = self._last_group_size
        if expected > 1:
            deadline = time.perf_counter() + self.commit_delay
            while len(self._queue) < expected and time.perf_counter() < deadline:
                time.sleep(0.00002)
        with self._queue_lock:
            batch: list[AppendRequest] = []
            count = 0
            while self._queue:
                head = self._queue[0]
                if batch and (
                    head.pending is not None or count + head.count > MAX_EVENTS_PER_COMMIT
                ):
                    break
                batch.append(self._queue.pop(0))
                count += head.count
                if head.pending is not None:
                    break  # an unencoded request commits alone: its errors surface mid-insert
        self._last_group_size = len(batch)
        try:
            with self._write_mutex:
                self._commit_batch(batch)
        except BaseException as exc:
            # The transaction rolled back: nothing of this batch was written.
            for req in batch:
                if req.error is None:
                    req.error = exc
                    req.result = None
        finally:
            with self._queue_lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    assert successor.done is not None
                    successor.done.set()
                else:
                    self._leader_active = False
            for req in batch:
                if req.done is not None and not req.lead:
                    req.done.set()

    def _commit_batch(self, batch: list[AppendRequest]) -> None:
        # Optimistic: event_ids are fresh UUIDv7s almost always, so the UNIQUE index is the
        # idempotency check. Only when it fires is the batch redone with explicit look-ups.
        try:
            self._commit_pass(batch, check_existing=False)
        except UniqueViolation:
            self._commit_pass(batch, check_existing=True)

    def _commit_pass(self, batch: list[AppendRequest], *, check_existing: bool) -> None:
        for req in batch:
            req.result = req.error = None
        with self._write_transaction() as tx:
            head = tx.head()
            existing = (
                tx.find_events([e.event_id for req in batch for e in req.encoded()])
                if check_existing
                else {}
            )
            versions: dict[str, int] = {}
            # (request, first seq, first version): positions are assigned here; the hashes are
            # computed while the rows stream into the backend (overlapping its work with ours).
            plan: list[tuple[AppendRequest, int, int]] = []
            seq = head.seq
            for req in batch:
                if check_existing:
                    try:
                        dedup = self._deduplicate(req, existing)
                    except LedgerError as exc:
                        req.error = exc
                        continue
                    if dedup is not None:
                        req.result = dedup
                        continue
                stream = req.stream
                version = versions.get(stream)
                if version is None:
                    version = tx.stream_version(stream)
                if req.expected_version is not None and req.expected_version != version:
                    # A retry of a recorded append fails the version check before the UNIQUE
                    # index could tell: look its event_ids up (only on this rare path).
                    self._conflict_or_retry(tx, req, version, existing if check_existing else None)
                    continue
                first_seq, first_version = seq + 1, version + 1
                plan.append((req, first_seq, first_version))
                seq += req.count
                version += req.count
                if check_existing:
                    for offset, e in enumerate(req.events):
                        existing[e.event_id] = (
                            first_seq + offset, stream, first_version + offset, e.type,
                            e.payload_hash,
                        )  # fmt: skip
                versions[stream] = version
                req.result = AppendResult(
                    stream,
                    tuple(
                        zip(
                            range(first_seq, seq + 1),
                            range(first_version, version + 1),
                            strict=True,
                        )
                    ),
                )
            if plan:
                chain = Chain(head.hash)
                tx.insert(chain.rows(plan), seq - head.seq)
                tx.set_head(Head(seq, chain.prev))
        self.commits += 1

    def _conflict_or_retry(
        self,
        tx: WriteTransaction,
        req: AppendRequest,
        version: int,
        existing: dict[str, tuple[int, str, int, str, bytes]] | None,
    ) -> None:
        if existing is None:
            existing = tx.find_events([e.event_id for e in req.encoded()])
        try:
            req.result = self._deduplicate(req, existing)
        except LedgerError as exc:
            req.error = exc
            return
        if req.result is None:
            assert req.expected_version is not None
            req.error = StreamVersionConflict(req.stream, req.expected_version, version)

    @staticmethod
    def _deduplicate(
        req: AppendRequest, existing: dict[str, tuple[int, str, int, str, bytes]]
    ) -> AppendResult | None:
        found = [existing.get(e.event_id) for e in req.encoded()]
        if all(f is None for f in found):
            return None
        positions = []
        for e, f in zip(req.events, found, strict=True):
            if f is None:
                raise IdempotencyConflict(
                    req.events[0].event_id, "with a different set of events in the same append"
                )
            seq, stream, version, etype, phash = f
            if stream != req.stream:
                raise IdempotencyConflict(e.event_id, f"in stream {stream!r}")
            if etype != e.type or phash != e.payload_hash:
                raise IdempotencyConflict(e.event_id, "with a different type or payload")
            positions.append((seq, version))
        return AppendResult(req.stream, tuple(positions), deduplicated=True)

    # ---- reading ------------------------------------------------------------------------

    def head(self) -> Head:
        return self._read_head()

    def stream_version(self, stream: str) -> int:
        """The stream's current version; 0 if it has no events."""
        return self._read_stream_version(validate_stream(stream))

    def read_stream(
        self, stream: str, from_version: int = 1, *, limit: int | None = None
    ) -> Iterator[Event]:
        """Events of one stream from ``from_version`` on, in version order."""
        query = RowQuery(stream=validate_stream(stream), from_version=from_version, limit=limit)
        return map(self._decode, self._iter_rows(query))

    def read_all(
        self,
        from_seq: int = 1,
        *,
        to_seq: int | None = None,
        types: Iterable[str] | None = None,
        streams: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Iterator[Event]:
        """Every event from ``from_seq`` (to ``to_seq``) in seq order, newest first with
        ``descending``; ``streams`` is a stream-name prefix. Both backends answer a prefix, a
        type or a ``limit`` from an index, not by scanning the ledger."""
        query = RowQuery(
            from_seq=from_seq,
            to_seq=to_seq,
            types=tuple(types) if types is not None else None,
            stream_prefix=streams or None,
            limit=limit,
            descending=descending,
        )
        return map(self._decode, self._iter_rows(query))

    def first_seq_at(self, moment: str) -> int:
        """The first seq recorded at or after ``moment`` (an ISO UTC time as events carry),
        by bisection: event times follow seq order (each writer stamps its clock inside the
        transaction that assigns the seq), so this reads about log2(head) events."""
        low, high = 1, self.head().seq + 1
        while low < high:
            middle = (low + high) // 2
            rows = self.read_raw(middle, middle)
            try:
                row = next(rows, None)
            finally:
                rows.close()
            when = str(decode_json(row[7]).get("time", "")) if row is not None else ""
            if when < moment:
                low = middle + 1
            else:
                high = middle
        return low

    def read_raw(
        self, from_seq: int = 1, to_seq: int | None = None
    ) -> Generator[RawRow, None, None]:
        """Stored rows exactly as written (no decoding, no upcasting)."""
        return self._iter_rows(RowQuery(from_seq=from_seq, to_seq=to_seq))

    def read_chain(
        self, from_seq: int, to_seq: int
    ) -> Generator[tuple[int, bytes, bytes | None, bytes, bytes, bytes], None, None]:
        """(seq, prev_hash, data, payload_hash, hash, hash preimage) per stored row, for verify.

        Backends may build the preimage in SQL; this default builds it from ``read_raw``.
        """
        for row in self.read_raw(from_seq, to_seq):
            seq, event_id, stream, version, etype, sv, data, meta, key_id, refs, ph, prev, h = row
            preimage = chain_preimage(
                prev, seq, event_id, stream, version, etype, sv, key_id, refs, meta, ph
            )
            yield seq, prev, data, ph, h, preimage

    def count(self) -> int:
        return self._count_rows()

    def hash_at(self, seq: int) -> bytes | None:
        """The recorded hash of event ``seq`` (None if there is none)."""
        rows = self.read_raw(seq, seq)
        try:
            row = next(rows, None)
        finally:
            rows.close()
        return None if row is None else bytes(row[12])

    def referenced_objects(self) -> dict[str, int]:
        """Every object digest any event refers to, with the first seq referring to it."""
        refs: dict[str, int] = {}
        for seq, joined in self._iter_refs():
            for digest in split_refs(joined):
                refs.setdefault(digest, seq)
        return refs

    def _decode(self, row: RawRow) -> Event:
        seq, event_id, stream, version, etype, sv, data, meta, key_id, refs, phash, prev, h = row
        if data is None:
            payload: dict[str, Any] = {}
            redacted = True
        else:
            payload = decode_json(data)
            redacted = False
        if self._upcasting and not redacted:
            sv, payload = self.upcasters.upcast(etype, sv, payload)
        return Event(
            seq, event_id, stream, version, etype, sv, payload, decode_json(meta),
            tuple(refs.split(",")) if refs else (), key_id, phash, prev, h, redacted,
        )  # fmt: skip

    def subscribe(
        self,
        from_seq: int = 1,
        *,
        types: Iterable[str] | None = None,
        streams: str | None = None,
        poll_interval: float = 0.05,
        idle_timeout: float | None = None,
    ) -> Subscription:
        """Catch up from ``from_seq``, then follow new events live; never skips one."""
        return Subscription(self, from_seq, types, streams, poll_interval, idle_timeout)

    # ---- export / import / verify -------------------------------------------------------

    def export_records(self, from_seq: int = 1) -> Iterator[dict[str, Any]]:
        """Every stored event as a JSON-ready record, as stored (no upcasting)."""
        for row in self.read_raw(from_seq):
            seq, event_id, stream, version, etype, sv, data, meta, key_id, refs, ph, prev, h = row
            yield {
                "seq": seq,
                "event_id": event_id,
                "stream": stream,
                "version": version,
                "type": etype,
                "schema_version": sv,
                "data": None if data is None else decode_json(data),
                "meta": decode_json(meta),
                "refs": list(split_refs(refs)),
                "key_id": key_id,
                "payload_hash": bytes(ph).hex(),
                "prev_hash": bytes(prev).hex(),
                "hash": bytes(h).hex(),
            }

    def import_records(self, records: Iterable[Mapping[str, Any]], batch_size: int = 1000) -> int:
        """Append exported records, reproducing their seq and hashes exactly; returns the count."""
        total = 0
        batch: list[RawRow] = []
        for record in records:
            batch.append(_record_to_row(record))
            if len(batch) >= batch_size:
                total += self._import_batch(batch)
                batch = []
        if batch:
            total += self._import_batch(batch)
        return total

    def _import_batch(self, rows: list[RawRow]) -> int:
        with self._write_mutex, self._write_transaction() as tx:
            head = tx.head()
            existing = tx.find_events([r[1] for r in rows])
            if existing:
                first = next(iter(existing))
                raise ImportMismatch(existing[first][0], f"event_id {first} is already recorded")
            versions: dict[str, int] = {}
            seq, prev = head.seq, head.hash
            for row in rows:
                r_seq, _eid, stream, version = row[0], row[1], row[2], row[3]
                if r_seq != seq + 1:
                    raise ImportMismatch(r_seq, f"the ledger's next seq is {seq + 1}")
                if row[11] != prev:
                    raise ImportMismatch(r_seq, "prev_hash does not match the ledger's head")
                current = versions.get(stream)
                if current is None:
                    current = tx.stream_version(stream)
                if version != current + 1:
                    raise ImportMismatch(r_seq, f"stream {stream!r} is at version {current}")
                if row[6] is not None and payload_digest(row[6]) != row[10]:
                    raise ImportMismatch(r_seq, "payload does not match payload_hash")
                recomputed = row_hash(row)  # its prev_hash was checked just above
                if recomputed != row[12]:
                    raise ImportMismatch(r_seq, "recomputed hash differs from the recorded one")
                versions[stream] = version
                seq, prev = r_seq, recomputed
            tx.insert(rows, len(rows))
            tx.set_head(Head(seq, prev))
        return len(rows)

    def verify(
        self, *, workers: int | None = None, progress: Callable[[int], None] | None = None
    ) -> Head:
        """Recompute the whole chain; raise ``ChainBroken`` at the first bad seq, else the head."""
        from fmforge.ledger.verify import verify_chain

        return verify_chain(self, workers=workers, progress=progress)


def _record_to_row(record: Mapping[str, Any]) -> RawRow:
    try:
        seq = int(record["seq"])
        stream = validate_stream(record["stream"])
        etype = validate_type(record["type"])
        event_id = validate_event_id(record["event_id"])
        data = None if record["data"] is None else canonical_json(record["data"])
        meta = canonical_json(record["meta"], "meta")
        refs = validate_refs(record.get("refs") or [])
        row: RawRow = (
            seq, event_id, stream, int(record["version"]), etype, int(record["schema_version"]),
            data, meta, record.get("key_id"), refs, bytes.fromhex(record["payload_hash"]),
            bytes.fromhex(record["prev_hash"]), bytes.fromhex(record["hash"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"malformed event record (seq {record.get('seq')!r}): {exc!r}") from None
    return row


def genesis_head() -> Head:
    return Head(0, GENESIS_HASH)
