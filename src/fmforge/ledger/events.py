"""Event records, their canonical bytes, and the hash chain over them.

An event's ``hash`` is ``blake3(prev_hash + header + payload_hash)``. The header holds everything
but the payload (``data``); the payload enters only through its own blake3 digest. A payload can
therefore
be redacted or crypto-shredded later (``data`` set to NULL, or replaced by ciphertext under the
subject key named by ``key_id``) and the chain still verifies.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import blake3
import orjson

from fmforge.errors import InvalidEvent

GENESIS_HASH = bytes(32)
"""``prev_hash`` of the first event of every ledger."""

# Only plain JSON types are accepted: datetimes, dataclasses and str/int subclasses would be
# silently turned into other types, and the caller would not get back what it recorded.
JSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,127}\Z")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}\Z")
# Names seen valid once need no second regex match (bounded, so memory stays small).
_valid_streams: set[str] = set()
_valid_types: set[str] = set()


def canonical_json(value: Any, what: str = "data") -> bytes:
    """Sorted-key compact UTF-8 JSON; rejects NaN/Inf and non-JSON types instead of coercing."""
    try:
        out = orjson.dumps(value, option=JSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidEvent(f"event {what} is not plain JSON: {exc}") from None
    # orjson writes NaN/Inf as null; only then is the slower walk needed.
    if b"null" in out and _has_non_finite(value):
        raise InvalidEvent(
            f"event {what} contains NaN or Infinity, which JSON cannot hold; record it as a string"
        )
    return out


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def decode_json(raw: bytes | str) -> Any:
    return orjson.loads(raw)


class _Entropy(threading.local):
    """Random bytes from the operating system (``os.urandom``), drawn 4 KiB at a time per
    thread: ids must not repeat when a script seeds ``random`` or numpy, or after a fork, and a
    system call per id would dominate batch appends. Forked children start with an empty pool
    (``os.register_at_fork``), so parent and child never share bytes."""

    def __init__(self) -> None:
        self.pool = b""
        self.offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.pool):
            self.pool, self.offset = os.urandom(4096), 0
        chunk = self.pool[self.offset : self.offset + count]
        self.offset += count
        return chunk


_entropy = _Entropy()


def _reset_entropy() -> None:
    _entropy.pool, _entropy.offset = b"", 0


os.register_at_fork(after_in_child=_reset_entropy)


def random_bits(bits: int) -> int:
    """``bits`` random bits from the operating system's generator (see ``_Entropy``)."""
    return int.from_bytes(_entropy.take((bits + 7) // 8), "big") >> (-bits % 8)


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits; sorts by time.

    The random bits come from ``os.urandom`` (pooled), never from ``random`` or numpy, whose
    global state a user's script may seed: the id is the idempotency key, so two events must
    never share one.
    """
    millis = time.time_ns() // 1_000_000
    rand = random_bits(74)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & _LOW62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LOW62 = (1 << 62) - 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def validate_stream(stream: str) -> str:
    if stream in _valid_streams:
        return stream
    if (
        not isinstance(stream, str)
        or not stream
        or len(stream) > 512
        or stream != stream.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in stream)
    ):
        raise InvalidEvent(
            f"invalid stream name {stream!r}: 1-512 printable characters, no surrounding spaces"
        )
    if len(_valid_streams) < 100_000:
        _valid_streams.add(stream)
    return stream


def validate_type(event_type: str) -> str:
    if event_type in _valid_types:
        return event_type
    if not isinstance(event_type, str) or not _NAME_RE.match(event_type):
        raise InvalidEvent(
            f"invalid event type {event_type!r}: a name such as 'ModelCommitted' "
            "(letters, digits, '_' or '.', starting with a letter)"
        )
    if len(_valid_types) < 100_000:
        _valid_types.add(event_type)
    return event_type


def validate_event_id(event_id: str) -> str:
    if not isinstance(event_id, str) or not _UUID_RE.match(event_id):
        raise InvalidEvent(f"invalid event_id {event_id!r}: a lowercase hyphenated UUID (v7)")
    return event_id


def validate_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not _KEY_ID_RE.match(key_id):
        raise InvalidEvent(
            f"invalid key_id {key_id!r}: 1-128 characters from letters, digits and '_.:-'"
        )
    return key_id


def validate_refs(refs: Sequence[str]) -> str:
    for ref in refs:
        if not isinstance(ref, str) or not _DIGEST_RE.match(ref):
            raise InvalidEvent(
                f"invalid object reference {ref!r}: a 64-character blake3 hex digest"
            )
    return ",".join(refs)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``refs`` lists the object-store digests the event points at.

    ``meta`` may carry ``actor``, ``correlation_id``, ``causation_id`` and extra keys; the store
    adds ``time`` (UTC) and fills ``actor`` and ``correlation_id`` when they are missing.
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    event_id: str = field(default_factory=new_event_id)
    refs: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    key_id: str | None = None


class Event(NamedTuple):
    """A recorded event: an immutable record. Treat ``data`` and ``meta`` as read-only.

    A named tuple rather than a frozen dataclass: replaying millions of events is dominated by
    building these, and a tuple is built several times faster.
    """

    seq: int
    event_id: str
    stream: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    refs: tuple[str, ...]
    key_id: str | None
    payload_hash: bytes
    prev_hash: bytes
    hash: bytes
    redacted: bool = False

    @property
    def time(self) -> str:
        return str(self.meta.get("time", ""))

    def to_record(self) -> dict[str, Any]:
        """The JSONL export form: every stored field, hashes in hex."""
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": None if self.redacted else self.data,
            "meta": self.meta,
            "refs": list(self.refs),
            "key_id": self.key_id,
            "payload_hash": self.payload_hash.hex(),
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


# A stored row, in column order. Backends read and write exactly this shape.
RawRow = tuple[
    int, str, str, int, str, int, bytes | None, bytes, str | None, str, bytes, bytes, bytes
]
ROW_COLUMNS = (
    "seq",
    "event_id",
    "stream",
    "version",
    "type",
    "schema_version",
    "data",
    "meta",
    "key_id",
    "refs",
    "payload_hash",
    "prev_hash",
    "hash",
)


def payload_digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def chain_preimage(
    prev_hash: bytes,
    seq: int,
    event_id: str,
    stream: str,
    version: int,
    event_type: str,
    schema_version: int,
    key_id: str | None,
    refs: str,
    meta: bytes,
    payload_hash: bytes,
) -> bytes:
    """The bytes an event's hash is taken over: ``prev_hash ‖ header ‖ payload_hash``."""
    # Fields are NUL-separated; none may contain NUL (names are validated, meta is JSON), and meta
    # is followed only by the fixed-size payload hash, so the encoding is unambiguous.
    header = b"%d\x00%s\x00%s\x00%d\x00%s\x00%d\x00%s\x00%s\x00" % (
        seq,
        event_id.encode(),
        stream.encode(),
        version,
        event_type.encode(),
        schema_version,
        (key_id or "").encode(),
        refs.encode(),
    )
    return prev_hash + header + meta + payload_hash


def row_hash(row: RawRow) -> bytes:
    seq, event_id, stream, version, etype, sv, _data, meta, key_id, refs, phash, prev, _h = row
    preimage = chain_preimage(
        prev, seq, event_id, stream, version, etype, sv, key_id, refs, meta, phash
    )
    return blake3.blake3(preimage).digest()


def split_refs(refs: str) -> tuple[str, ...]:
    return tuple(refs.split(",")) if refs else ()
