"""Chain verification: recompute every event's hash and link, name the first bad seq.

Each row stores its ``prev_hash``, so rows can be checked independently and the links between
ranges stitched afterwards; large ledgers are split across worker processes.
Caught: an edited payload (payload hash), an edited header field (chain hash), a deleted row (seq
gap, or a head row that points past the last event), reordered rows (seq is hashed), a rewritten
hash (the next row's prev_hash no longer links).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing

import blake3

from fmforge.errors import ChainBroken
from fmforge.ledger.events import GENESIS_HASH
from fmforge.ledger.records import Head
from fmforge.ledger.store import EventStore

PARALLEL_THRESHOLD = 200_000

ChainRow = tuple[int, bytes, bytes | None, bytes, bytes, bytes]
Link = tuple[bytes | None, bytes | None, int]  # (first prev_hash, last hash, events) of a range
RangeResult = Link | ChainBroken


def verify_rows(
    rows: Iterable[ChainRow],
    first_seq: int,
    last_seq: int,
    progress: Callable[[int], None] | None = None,
) -> Link:
    """Verify rows ``first_seq..last_seq`` on their own; return (first prev_hash, last hash, n)."""
    hasher = blake3.blake3
    expected = first_seq
    prev: bytes | None = None
    first_prev: bytes | None = None
    for seq, p, data, ph, h, preimage in rows:
        if seq != expected:
            raise ChainBroken(expected, "event is missing (seq gap)")
        if prev is None:
            first_prev = bytes(p)
        elif p != prev:
            raise ChainBroken(seq, "prev_hash does not link to the previous event's hash")
        if data is not None:
            if type(data) is not bytes:
                raise ChainBroken(
                    seq, f"payload is stored as {type(data).__name__}, not bytes: rewritten"
                )
            if hasher(data).digest() != ph:
                raise ChainBroken(seq, "payload does not match its recorded payload hash")
        if hasher(preimage).digest() != h:
            raise ChainBroken(seq, "event header does not match its recorded hash")
        prev = h
        expected += 1
        if progress is not None and expected % 100_000 == 0:
            progress(expected - first_seq)
    if expected != last_seq + 1:
        raise ChainBroken(expected, "event is missing (seq gap)")
    return first_prev, None if prev is None else bytes(prev), expected - first_seq


_parent_store: EventStore | None = None


def _verify_range_in_child(first_seq: int, last_seq: int) -> RangeResult:
    assert _parent_store is not None
    store = _parent_store.reopen()
    try:
        with closing(store.read_chain(first_seq, last_seq)) as rows:
            return verify_rows(rows, first_seq, last_seq)
    except ChainBroken as exc:
        return exc
    finally:
        store.close()


def verify_chain(
    store: EventStore,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Head:
    head = store.head()
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if head.seq >= PARALLEL_THRESHOLD else 1
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        links = _verify_parallel(store, head.seq, workers)
    else:
        with closing(store.read_chain(1, head.seq)) as rows:
            links = [verify_rows(rows, 1, head.seq, progress)]
    _stitch(links)
    last_hash = links[-1][1] if head.seq else GENESIS_HASH
    if last_hash != head.hash:
        raise ChainBroken(head.seq, "the ledger head does not match the last event's hash")
    with closing(store.read_raw(head.seq + 1)) as rest:
        beyond = next(rest, None)
    if beyond is not None:
        raise ChainBroken(beyond[0], "event lies beyond the recorded ledger head")
    return head


def _verify_parallel(store: EventStore, last_seq: int, workers: int) -> list[Link]:
    global _parent_store
    step = -(-last_seq // workers)
    ranges = [(lo, min(lo + step - 1, last_seq)) for lo in range(1, last_seq + 1, step)]
    _parent_store = store
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            results = list(pool.map(_verify_range_in_child, *zip(*ranges, strict=True)))
    finally:
        _parent_store = None
    failures = [r for r in results if isinstance(r, ChainBroken)]
    if failures:
        raise min(failures, key=lambda exc: exc.seq)
    return [r for r in results if not isinstance(r, ChainBroken)]


def _stitch(links: list[Link]) -> None:
    expected_prev = GENESIS_HASH
    seq = 1
    for first_prev, last_hash, count in links:
        if count == 0:
            continue
        if first_prev != expected_prev:
            raise ChainBroken(seq, "prev_hash does not link to the previous event's hash")
        assert last_hash is not None
        expected_prev = last_hash
        seq += count
