"""The runs table as a projection: one row per run, one per (run, metric) summary.

Built from ``RunStarted``, ``MetricsLogged``, ``AnomalyDetected``, ``CheckpointLogged`` and
``RunFinished`` alone (chunks are never opened), so listing and filtering a thousand runs is a
query. A run whose last event is older than the heartbeat timeout and that never finished is
reported ``crashed``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.repository import Repository
from fmforge.tracking.query import parse
from fmforge.tracking.reading import epoch_seconds
from fmforge.tracking.runs import HEARTBEAT_S

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, last_seen REAL NOT NULL, duration_s REAL, base_model TEXT,
    datasets TEXT NOT NULL, tags TEXT NOT NULL, config TEXT NOT NULL, anomalies INTEGER NOT NULL,
    checkpoints INTEGER NOT NULL
);
CREATE INDEX runs_by_start ON runs (started);
CREATE TABLE run_metrics (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, count INTEGER NOT NULL, last REAL, min REAL,
    max REAL, non_finite INTEGER NOT NULL, last_step INTEGER NOT NULL,
    PRIMARY KEY (run_id, metric)
);
"""


class RunsView(Projection):
    name = "runs"
    version = 2
    tables = ("runs", "run_metrics")

    def create_tables(self, db: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    def _seen(self, db: sqlite3.Connection, event: Event) -> str:
        run_id = event.stream.removeprefix("run/")
        db.execute(
            "UPDATE runs SET last_seen = max(last_seen, ?) WHERE run_id = ?",
            (epoch_seconds(event.time), run_id),
        )
        return run_id

    @handles("RunStarted")
    def started(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, 0, 0)",
            (
                d["run"], d["project"], d["name"], d["started"], epoch_seconds(event.time),
                d["base_model"], json.dumps(d["datasets"]), json.dumps(d.get("tags", [])),
                json.dumps(d["config_flat"]),
            ),
        )  # fmt: skip

    @handles("ParamsLogged")
    def params(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        (config,) = db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        merged = {**json.loads(config), **event.data["params"]}
        db.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(merged), run_id))

    @handles("RunEnvironment", "RunHeartbeat", "SampleLogged", "EvalLogged", "TagsSet")
    def alive(self, db: sqlite3.Connection, event: Event) -> None:
        self._seen(db, event)

    @handles("MetricsLogged")
    def metrics(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        for name, new in event.data["metrics"].items():
            db.execute(
                """
                INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, metric) DO UPDATE SET
                    count = count + excluded.count,
                    non_finite = non_finite + excluded.non_finite,
                    min = CASE WHEN min IS NULL THEN excluded.min
                               WHEN excluded.min IS NULL THEN min
                               ELSE min(min, excluded.min) END,
                    max = CASE WHEN max IS NULL THEN excluded.max
                               WHEN excluded.max IS NULL THEN max
                               ELSE max(max, excluded.max) END,
                    last = CASE WHEN excluded.last_step >= last_step THEN excluded.last
                                ELSE last END,
                    last_step = max(last_step, excluded.last_step)
                """,
                (
                    run_id, name, new["count"], new["last"], new["min"], new["max"],
                    new["non_finite"], new["last_step"],
                ),
            )  # fmt: skip

    @handles("AnomalyDetected")
    def anomaly(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute("UPDATE runs SET anomalies = anomalies + 1 WHERE run_id = ?", (run_id,))

    @handles("CheckpointLogged")
    def checkpoint(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute("UPDATE runs SET checkpoints = checkpoints + 1 WHERE run_id = ?", (run_id,))

    @handles("RunFinished")
    def finished(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute(
            "UPDATE runs SET status = ?, duration_s = ? WHERE run_id = ?",
            (event.data["status"], event.data["duration_s"], run_id),
        )


class RunsIndex:
    def __init__(self, db: sqlite3.Connection, heartbeat_timeout_s: float) -> None:
        self.db = db
        self.timeout = heartbeat_timeout_s

    def rows(self, where: str | None = None, *, project: str | None = None) -> list[dict[str, Any]]:
        """Every run (newest first) as a dict with its config and metric summaries, filtered
        by a query (see ``fmforge.tracking.query``)."""
        predicate = parse(where) if where else None
        metrics: dict[str, dict[str, dict[str, Any]]] = {}
        for run_id, metric, count, last, low, high, non_finite, last_step in self.db.execute(
            "SELECT * FROM run_metrics"
        ):
            metrics.setdefault(run_id, {})[metric] = {
                "count": count, "last": last, "min": low, "max": high,
                "non_finite": non_finite, "last_step": last_step,
            }  # fmt: skip
        now = time.time()
        out = []
        query = "SELECT * FROM runs" + (" WHERE project = ?" if project else "")
        for row in self.db.execute(query + " ORDER BY started DESC", (project,) if project else ()):
            (run_id, proj, name, status, started, last_seen, duration, base_model, datasets,
             tags, config, anomalies, checkpoints) = row  # fmt: skip
            if status == "running" and now - last_seen > self.timeout:
                status = "crashed"
            run = {
                "id": run_id, "project": proj, "name": name, "status": status,
                "started": started, "duration_s": duration, "base_model": base_model,
                "datasets": json.loads(datasets), "tags": json.loads(tags),
                "config": json.loads(config), "metrics": metrics.get(run_id, {}),
                "anomalies": anomalies, "checkpoints": checkpoints,
            }  # fmt: skip
            if predicate is None or predicate(run):
                out.append(run)
        return out

    def resolve(self, id_or_name: str) -> str:
        """A run id from an id, a unique id prefix (4+ characters) or a unique run name."""
        from fmforge.tracking.reading import RunNotFound

        rows = self.db.execute(
            "SELECT run_id FROM runs WHERE run_id = ? OR name = ? OR (length(?) >= 4 AND "
            "run_id LIKE ? || '%')",
            (id_or_name, id_or_name, id_or_name, id_or_name),
        ).fetchall()
        if not rows:
            raise RunNotFound(f"no run with id or name {id_or_name!r} (see `fmforge runs ls`)")
        if len(rows) > 1:
            raise RunNotFound(f"{id_or_name!r} names {len(rows)} runs; use the run id")
        return str(rows[0][0])


def runs_index(repo: Repository, heartbeat_timeout_s: float = 3 * HEARTBEAT_S) -> RunsIndex:
    """The runs projection, brought up to date with the ledger."""
    repo.views.run(RunsView())
    return RunsIndex(repo.views.db, heartbeat_timeout_s)
