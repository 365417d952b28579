"""Runs whose training process went silent, recorded as ``heartbeat_lost`` anomalies.

A process killed or hung cannot say so itself, so whoever reads the runs notices: the dashboard
server checks every few seconds, ``fmforge runs ls`` and ``show`` check before they read. The
anomaly is appended only if the run's stream is still where it was when it was found silent (a
run that speaks again meanwhile, or another watcher that got there first, wins), and once per
silence: it carries the ``last_seen`` it is about, and it does not itself count as a sign of life.
"""

from __future__ import annotations

import json
import time

from fmforge.errors import StreamVersionConflict
from fmforge.ledger import NewEvent
from fmforge.repository import Repository
from fmforge.tracking.runs import HEARTBEAT_S, STREAM_PREFIX
from fmforge.tracking.views import runs_index

DETECTOR = "heartbeat_lost"


def record_lost_heartbeats(
    repo: Repository, *, timeout_s: float = 3 * HEARTBEAT_S, now: float | None = None
) -> list[str]:
    """Record a ``heartbeat_lost`` anomaly for each running run silent for over ``timeout_s``
    and not yet flagged for this silence; returns their ids."""
    now = time.time() if now is None else now
    index = runs_index(repo, timeout_s)
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
        event = NewEvent(
            "AnomalyDetected",
            {
                "detector": DETECTOR, "metric": "", "step": max(steps, default=-1),
                "value": None, "severity": "error", "last_seen": last_seen,
                "evidence": f"no event for {now - last_seen:.0f} s (a running run writes at "
                f"least every {HEARTBEAT_S:.0f} s): its process is gone or hung",
            },
        )  # fmt: skip
        try:
            repo.ledger.append(stream, event, expected_version=version)
        except StreamVersionConflict:
            continue
        recorded.append(run_id)
    return recorded
