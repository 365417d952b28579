"""Who runs next: per-adapter queues, fair sharing, priorities, back-pressure, timeouts.

Requests wait in one queue per adapter (keyed by the adapter's content hash; the base model
has its own). When the engine has room it asks ``pick`` for requests:

- **Priorities first.** The request with the highest ``priority`` among the queues' heads goes
  first; within a queue, by priority then arrival.
- **Fair sharing (virtual token counters, as S-LoRA's VTC).** Among equal priorities, the
  adapter that has received the least service (prompt plus generated tokens) goes first, so a
  quiet adapter is never starved by a hot one. A queue that was empty is lifted to the lowest
  counter of the queues waiting, so idling does not bank credit.
- **Readiness.** Only adapters whose weights are in memory (``ready``) are picked; the others
  are being prefetched meanwhile. ``place`` gives the request a device slot or says no; an
  adapter that cannot get one is skipped, and the engine swaps adapters out after the cycle
  time (see ``engine``).
- **Back-pressure.** Past ``max_queued`` waiting requests (or ``max_queued_per_adapter`` on
  one adapter), ``submit`` raises ``Overloaded`` with a Retry-After estimate.
- **Timeouts and cancellation.** A request waiting past its deadline is expired (the caller
  answers it); a cancelled one (its client went away) leaves its queue at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from fmforge.errors import Overloaded

Key = str | None  # an adapter's content hash, or None for the base model


@dataclass(eq=False)
class Ticket:
    """A request as the scheduler sees it; ``payload`` is the engine's."""

    key: Key
    cost: int  # tokens charged when admitted (the prompt's)
    priority: int = 0
    deadline: float | None = None
    payload: Any = None
    arrival: float = field(default_factory=time.monotonic)
    admitted: float | None = None
    cancelled: bool = False

    @property
    def waited(self) -> float:
        return (self.admitted or time.monotonic()) - self.arrival


class Scheduler:
    def __init__(
        self,
        *,
        max_queued: int = 1024,
        max_queued_per_adapter: int | None = None,
        on_admit: Callable[[Ticket], None] | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.max_queued_per_adapter = max_queued_per_adapter or max_queued
        self.cond = threading.Condition()
        self._queues: dict[Key, list[tuple[int, float, int, Ticket]]] = {}
        self._counters: dict[Key, float] = {}
        self._order = itertools.count()
        self._waiting = 0
        self._admitted_rate = 0.0  # requests per second, smoothed
        self._last_admit = time.monotonic()
        self._on_admit = on_admit

    # ---- the callers' side ----------------------------------------------------------------

    def submit(self, ticket: Ticket) -> None:
        with self.cond:
            queue = self._queues.setdefault(ticket.key, [])
            if self._waiting >= self.max_queued:
                raise Overloaded(
                    f"the server has {self._waiting} requests waiting (its limit); retry later",
                    self.retry_after(),
                )
            if len(queue) >= self.max_queued_per_adapter:
                raise Overloaded(
                    f"{len(queue)} requests are waiting for this model (the limit per adapter); "
                    "retry later",
                    self.retry_after(len(queue)),
                )
            if not queue:
                waiting = [self._counters.get(k, 0.0) for k, q in self._queues.items() if q]
                if waiting:
                    self._counters[ticket.key] = max(
                        self._counters.get(ticket.key, 0.0), min(waiting)
                    )
            heapq.heappush(queue, (-ticket.priority, ticket.arrival, next(self._order), ticket))
            self._waiting += 1
            self.cond.notify_all()

    def cancel(self, ticket: Ticket) -> bool:
        """Mark ``ticket`` cancelled; True if it was still waiting (and is gone now)."""
        with self.cond:
            ticket.cancelled = True
            queue = self._queues.get(ticket.key)
            if ticket.admitted is not None or not queue:
                return False
            kept = [item for item in queue if item[3] is not ticket]
            if len(kept) == len(queue):
                return False
            heapq.heapify(kept)
            self._queues[ticket.key] = kept
            self._waiting -= 1
            return True

    def retry_after(self, ahead: int | None = None) -> int:
        """Seconds until ``ahead`` (default: every waiting) request is likely admitted."""
        ahead = self._waiting if ahead is None else ahead
        rate = max(self._admitted_rate, 0.5)
        return max(1, min(60, math.ceil(ahead / rate)))

    # ---- the engine's side ----------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return self._waiting

    def depth(self) -> dict[Key, int]:
        with self.cond:
            return {k: len(q) for k, q in self._queues.items() if q}

    def wait(self, timeout: float) -> None:
        with self.cond:
            if self._waiting == 0:
                self.cond.wait(timeout)

    def waiting_keys(self) -> list[Key]:
        with self.cond:
            return [k for k, q in self._queues.items() if q]

    def pick(
        self,
        limit: int,
        *,
        ready: Callable[[Key], bool],
        place: Callable[[Ticket], bool],
        excluded: Collection[Key] = (),
    ) -> tuple[list[Ticket], set[Key]]:
        """Up to ``limit`` tickets to admit now, and the keys that were ready but found no
        slot (``place`` said no)."""
        chosen: list[Ticket] = []
        blocked: set[Key] = set()
        with self.cond:
            while len(chosen) < limit:
                best: tuple[int, float, float, int] | None = None
                best_key: Key = None
                for key, queue in self._queues.items():
                    if not queue or key in blocked or key in excluded or not ready(key):
                        continue
                    priority, arrival, order, _ticket = queue[0]
                    rank = (priority, self._counters.get(key, 0.0), arrival, order)
                    if best is None or rank < best:
                        best, best_key = rank, key
                if best is None:
                    break
                queue = self._queues[best_key]
                ticket = queue[0][3]
                if not place(ticket):
                    blocked.add(best_key)
                    continue
                heapq.heappop(queue)
                self._waiting -= 1
                ticket.admitted = time.monotonic()
                self._counters[best_key] = self._counters.get(best_key, 0.0) + ticket.cost
                chosen.append(ticket)
            if chosen:
                now = time.monotonic()
                elapsed = max(now - self._last_admit, 1e-3)
                self._admitted_rate = 0.8 * self._admitted_rate + 0.2 * (len(chosen) / elapsed)
                self._last_admit = now
        if self._on_admit is not None:
            for ticket in chosen:
                self._on_admit(ticket)
        return chosen, blocked

    def charge(self, service: dict[Key, int]) -> None:
        """Add generated tokens to each adapter's counter."""
        with self.cond:
            for key, tokens in service.items():
                self._counters[key] = self._counters.get(key, 0.0) + tokens

    def expire(self, now: float | None = None) -> list[Ticket]:
        """Remove and return the waiting tickets whose deadline has passed."""
        now = time.monotonic() if now is None else now
        expired: list[Ticket] = []
        with self.cond:
            for key, queue in self._queues.items():
                late = [i for i in queue if i[3].deadline is not None and i[3].deadline <= now]
                if not late:
                    continue
                kept = [
                    i for i in queue if not (i[3].deadline is not None and i[3].deadline <= now)
                ]
                heapq.heapify(kept)
                self._queues[key] = kept
                expired.extend(item[3] for item in late)
            self._waiting -= len(expired)
        return expired

    def drain(self) -> list[Ticket]:
        """Every waiting ticket, removed (the server is stopping)."""
        with self.cond:
            out = [item[3] for queue in self._queues.values() for item in queue]
            self._queues.clear()
            self._waiting = 0
            return out
