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

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from fmforge.errors import (
    InvalidEvent,
)
from fmforge.ledger import transfer
from fmforge.ledger.appending import AppendRequest, Encoder
from fmforge.ledger.events import (
    Event,
    NewEvent,
    RawRow,
    chain_preimage,
    decode_json,
    split_refs,
    validate_stream,
)
from fmforge.ledger.groupcommit import MAX_EVENTS_PER_COMMIT, GroupCommitter
from fmforge.ledger.records import (
    AppendResult,
    ChangeWaiter,
    Head,
    RowQuery,
    WriteTransaction,
    default_actor,
)
from fmforge.ledger.registry import EventRegistry
from fmforge.ledger.subscriptions import Subscription
from fmforge.ledger.upcasting import UpcasterRegistry

logger = logging.getLogger(__name__)

LAZY_FROM = 64


class EventStore(GroupCommitter, ABC):
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
        self._init_group_commit()

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

    def read_hashes(self, from_seq: int, to_seq: int) -> Iterator[bytes]:
        """The recorded hash of every event in the range, in seq order, nothing else read
        (the Merkle tree of ``fmforge.access.audit`` is built over them). Backends answer it
        with one narrow query."""
        return (bytes(row[12]) for row in self.read_raw(from_seq, to_seq))

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
        self.registry.validate_all(stream, events)
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
        return transfer.export_records(self, from_seq)

    def import_records(self, records: Iterable[Mapping[str, Any]], batch_size: int = 1000) -> int:
        """Append exported records, reproducing their seq and hashes exactly; returns the count."""
        return transfer.import_records(self, records, batch_size)

    def verify(
        self, *, workers: int | None = None, progress: Callable[[int], None] | None = None
    ) -> Head:
        """Recompute the whole chain; raise ``ChainBroken`` at the first bad seq, else the head."""
        from fmforge.ledger.verify import verify_chain

        return verify_chain(self, workers=workers, progress=progress)
