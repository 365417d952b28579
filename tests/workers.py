"""Functions run in child processes by the tests (importable under the spawn start method)."""

from __future__ import annotations

import os

from fmforge.ledger import NewEvent, open_event_store


def append_many(url: str, worker: int, count: int, batch: int) -> int:
    """Append ``count`` events to this worker's stream, ``batch`` per call, with version checks."""
    with open_event_store(url, busy_timeout=60) as store:
        version = 0
        for start in range(0, count, batch):
            events = [
                NewEvent("Ticked", {"worker": worker, "n": n})
                for n in range(start, min(start + batch, count))
            ]
            version = store.append(f"worker/{worker}", events, expected_version=version).version
        return version


def put_then_crash(root: str, chunks: int) -> None:
    """Start a streaming put and die (no cleanup, no exception handling) halfway through."""
    from fmforge.objects import LocalObjectStore

    store = LocalObjectStore(root, compression="off", chunk_size=1 << 20)

    def chunks_then_exit():
        for i in range(chunks):
            yield os.urandom(1 << 20)
            if i == chunks // 2:
                os._exit(9)

    store.put(chunks_then_exit())
