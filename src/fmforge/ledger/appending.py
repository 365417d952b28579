"""The write path shared by every backend: encoding events, append requests, chain hashing.

An append's events are encoded (canonical JSON, payload hash, meta) by an ``Encoder``; the
request waits in the group-commit queue (``EventStore._submit``); the leader assigns positions
and a ``Chain`` turns the planned events into hashed rows while the backend inserts them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import blake3
import orjson

from fmforge.errors import InvalidEvent
from fmforge.ledger.events import (
    JSON_OPTIONS,
    NewEvent,
    RawRow,
    canonical_json,
    utc_now,
    validate_event_id,
    validate_key_id,
    validate_refs,
    validate_type,
)

if TYPE_CHECKING:
    from fmforge.ledger.records import AppendResult


class Encoded(NamedTuple):
    event_id: str
    type: str
    schema_version: int
    data: bytes
    payload_hash: bytes
    meta: bytes
    refs: str
    key_id: str | None


_new_tuple = tuple.__new__
_blake3 = blake3.blake3


class Encoder:
    """Turns the NewEvents of one append into canonical bytes and hashes."""

    def __init__(self, actor: str, first: NewEvent) -> None:
        self.now = utc_now()
        self.actor = actor
        correlation = first.meta.get("correlation_id") or first.event_id
        self.base_meta = {"actor": actor, "correlation_id": correlation, "time": self.now}
        # Events without meta of their own (the common case) share one encoding.
        self.shared_meta = canonical_json(self.base_meta, "meta")

    def encode_all(self, events: Sequence[NewEvent]) -> list[Encoded]:
        seen: set[str] = set()
        encoded = []
        for event in events:
            if type(event) is not NewEvent:
                raise InvalidEvent(f"expected NewEvent, got {type(event).__name__}")
            if event.event_id in seen:
                raise InvalidEvent(f"event_id {event.event_id} appears twice in one append")
            seen.add(event.event_id)
            encoded.append(self.encode(event))
        return encoded

    def encode(self, event: NewEvent) -> Encoded:
        validate_event_id(event.event_id)
        validate_type(event.type)
        if event.key_id is not None:
            validate_key_id(event.key_id)
        schema_version = event.schema_version
        if type(schema_version) is not int or schema_version < 1:
            raise InvalidEvent(f"{event.type}: schema_version must be an int >= 1")
        if type(event.data) is not dict and not isinstance(event.data, Mapping):
            raise InvalidEvent(f"{event.type}: data must be a JSON object")
        try:
            data = orjson.dumps(event.data, option=JSON_OPTIONS)
        except (orjson.JSONEncodeError, TypeError):
            data = canonical_json(event.data)  # raises InvalidEvent with the reason
        if b"null" in data:
            data = canonical_json(event.data)  # the slow path that refuses NaN/Infinity
        # The actor and time are the store's to stamp: an event's own meta cannot set them.
        meta = (
            canonical_json(
                {**self.base_meta, **event.meta, "time": self.now, "actor": self.actor}, "meta"
            )
            if event.meta
            else self.shared_meta
        )
        # tuple.__new__ skips the named tuple's Python-level __new__ (the hot loop of appends)
        return _new_tuple(
            Encoded,
            (
                event.event_id,
                event.type,
                schema_version,
                data,
                _blake3(data).digest(),
                meta,
                validate_refs(event.refs) if event.refs else "",
                event.key_id,
            ),
        )


@dataclass(eq=False, slots=True)
class AppendRequest:
    stream: str
    events: list[Encoded]
    expected_version: int | None
    encoder: Encoder | None = None
    pending: Sequence[NewEvent] | None = None  # not encoded yet (large appends)
    done: threading.Event | None = None  # only followers wait on one
    lead: bool = False
    result: AppendResult | None = None
    error: BaseException | None = None

    @property
    def count(self) -> int:
        return len(self.pending) if self.pending is not None else len(self.events)

    def encoded(self) -> list[Encoded]:
        """Every event encoded (encodes pending ones now)."""
        if self.pending is not None:
            assert self.encoder is not None
            self.events = self.encoder.encode_all(self.pending)
            self.pending = None
        return self.events


class Chain:
    """Hashes planned events into rows, in seq order, remembering the last hash."""

    def __init__(self, prev: bytes) -> None:
        self.prev = prev

    def rows(self, plan: list[tuple[AppendRequest, int, int]]) -> Iterator[RawRow]:
        prev = self.prev
        hasher = blake3.blake3
        for req, seq, version in plan:
            stream = req.stream
            stream_bytes = stream.encode()
            events: Iterable[Encoded] = req.events
            if req.pending is not None:
                assert req.encoder is not None
                events = map(req.encoder.encode, req.pending)
            for event_id, etype, sv, data, phash, meta, refs, key_id in events:
                # Inlined events.chain_preimage (the hot loop of every append); a test keeps the
                # two in step.
                header = b"%d\x00%s\x00%s\x00%d\x00%s\x00%d\x00%s\x00%s\x00" % (
                    seq, event_id.encode(), stream_bytes, version, etype.encode(), sv,
                    (key_id or "").encode(), refs.encode(),
                )  # fmt: skip
                digest = hasher(prev + header + meta + phash).digest()
                row = (seq, event_id, stream, version, etype, sv, data, meta, key_id, refs,
                       phash, prev, digest)  # fmt: skip
                prev = self.prev = digest  # before yielding: the last row is never resumed
                yield row
                seq += 1
                version += 1
