"""Subscriptions: catch up from a position, then follow the ledger live."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from fmforge.ledger.events import Event

if TYPE_CHECKING:
    from fmforge.ledger.store import EventStore


class Subscription(Iterator[Event]):
    """Iterates events from a start seq: first those stored, then new ones as they commit.

    Each read asks for everything after the last position seen, up to the head read just before,
    so an event can be delivered late but never skipped. ``close()`` (from any thread) or
    ``idle_timeout`` seconds without a new event end the iteration.
    """

    def __init__(
        self,
        store: EventStore,
        from_seq: int,
        types: Iterable[str] | None,
        streams: str | None,
        poll_interval: float,
        idle_timeout: float | None,
    ) -> None:
        self._store = store
        self._next_seq = max(1, from_seq)
        self._types = tuple(types) if types is not None else None
        self._streams = streams
        self._poll_interval = poll_interval
        self._idle_timeout = idle_timeout
        self._buffer: list[Event] = []
        self._closed = threading.Event()
        self._waiter = store._change_waiter(poll_interval)

    @property
    def position(self) -> int:
        """The next seq this subscription will consider."""
        return self._next_seq

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        idle_since = time.monotonic()
        while not self._buffer:
            if self._closed.is_set():
                self._waiter.close()
                raise StopIteration
            head = self._store.head().seq
            if head >= self._next_seq:
                self._buffer = list(
                    self._store.read_all(
                        self._next_seq,
                        to_seq=min(head, self._next_seq + 999),
                        types=self._types,
                        streams=self._streams,
                    )
                )
                self._next_seq = min(head, self._next_seq + 999) + 1
                self._buffer.reverse()
                continue
            if (
                self._idle_timeout is not None
                and time.monotonic() - idle_since >= self._idle_timeout
            ):
                self._waiter.close()
                raise StopIteration
            self._waiter.wait(self._poll_interval)
        return self._buffer.pop()

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._waiter.close()
