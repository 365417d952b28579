"""The ledger's value types and the backend seams (what a write transaction offers)."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fmforge.ledger.events import GENESIS_HASH, RawRow


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


def genesis_head() -> Head:
    return Head(0, GENESIS_HASH)
