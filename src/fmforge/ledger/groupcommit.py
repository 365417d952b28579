"""Group commit: every append is a request handed to a leader thread.

The first caller to find no leader becomes it, commits all requests queued by then in one
transaction (each request checked on its own, so a version conflict fails only its request),
then hands leadership to the next waiting caller. A lone caller pays nothing extra; concurrent
callers share fsyncs. After a group of several writers the leader waits up to ``commit_delay``
for them to queue again, as PostgreSQL's ``commit_delay`` does.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from contextlib import AbstractContextManager

from fmforge.errors import IdempotencyConflict, LedgerError, StreamVersionConflict, UniqueViolation
from fmforge.ledger.appending import AppendRequest, Chain
from fmforge.ledger.records import AppendResult, Head, WriteTransaction

MAX_EVENTS_PER_COMMIT = 5000


class GroupCommitter:
    """The append machinery of ``EventStore``: a queue of requests and one leader at a time."""

    def _init_group_commit(self) -> None:
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

    @abstractmethod
    def _write_transaction(self) -> AbstractContextManager[WriteTransaction]: ...

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
