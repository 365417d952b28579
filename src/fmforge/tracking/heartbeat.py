"""Runs whose training process went silent, recorded as ``heartbeat_lost`` anomalies.

A process killed or hung cannot say so itself. Every reader derives ``crashed`` at read time
from the silence (a read never writes); the dashboard server, a long-lived writer, also records
the loss in the run's history every few seconds. The anomaly is appended only if the run's
stream is still where it was when it was found silent (a run that speaks again meanwhile, or
another watcher that got there first, wins), and once per silence: it carries the
``last_seen`` it is about, and it does not itself count as a sign of life.
"""

from __future__ import annotations

import json
import time

from fmforge.errors import StreamVersionConflict
from fmforge.repository import Repository
from fmforge.tracking.events import AnomalyDetected
from fmforge.tracking.runs import HEARTBEAT_S, STREAM_PREFIX
from fmforge.tracking.views import RunsView

DETECTOR = "heartbeat_lost"


def record_lost_heartbeats(
    repo: Repository, *, timeout_s: float = 3 * HEARTBEAT_S, now: float | None = None
) -> list[str]:
    """Record a ``heartbeat_lost`` anomaly for each running run silent for over ``timeout_s``
    and not yet flagged for this silence; returns their ids."""
    now = time.time() if now is None else now
    index = repo.view(RunsView)
    silent = index.db.execute(
        "SELECT run_id, last_seen, metrics FROM runs WHERE status = 'running' AND last_seen < ? "
        "AND (lost_at IS NULL OR lost_at < last_seen)",
        (now - timeout_s,),
    ).fetchall()
    recorded = []
    for run_id, last_seen, metrics in silent:
        stream = STREAM_PREFIX + run_id
        version = repo.ledger.stream_version(stream)
        steps = [m["last_step"] for m in json.loads(metrics).values()]
        event = AnomalyDetected(
            {
                "detector": DETECTOR, "metric": "", "step": max(steps, default=-1),
                "value": None, "severity": "error", "last_seen": last_seen,
                "evidence": f"no event for {now - last_seen:.0f} s (a running run writes at "
                f"least every {HEARTBEAT_S:.0f} s): its process is gone or hung",
            },
        )  # fmt: skip
        try:
            repo.record(stream, event, expected_version=version)
        except StreamVersionConflict:
            continue
        recorded.append(run_id)
    return recorded
