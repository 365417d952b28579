"""The runs table as a projection: one row per run, with its metric summaries as stored JSON.

Built from ``RunStarted``, ``MetricsLogged``, ``AnomalyDetected``, ``CheckpointLogged`` and
``RunFinished`` alone (chunks are never opened), so listing and filtering a thousand runs is a
query. A run whose last event is older than the heartbeat timeout and that never finished is
reported ``crashed``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.repository import Repository
from fmforge.tracking.query import parse
from fmforge.tracking.reading import epoch_seconds, merge_summaries
from fmforge.tracking.runs import HEARTBEAT_S

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, last_seen REAL NOT NULL, duration_s REAL, base_model TEXT,
    datasets TEXT NOT NULL, tags TEXT NOT NULL, config TEXT NOT NULL, anomalies INTEGER NOT NULL,
    checkpoints INTEGER NOT NULL, metrics TEXT NOT NULL, lost_at REAL
);
CREATE INDEX runs_by_start ON runs (started);
"""


class RunsView(Projection):
    name = "runs"
    version = 4
    tables = ("runs",)

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
            "INSERT INTO runs VALUES "
            "(?, ?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, 0, 0, '{}', NULL)",
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
        # Kept as the JSON the dashboard sends: listing runs is then string assembly, not
        # 50 dicts per run (see RunsIndex.table_json).
        run_id = self._seen(db, event)
        (text,) = db.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        summary = json.loads(text)
        merge_summaries(summary, event.data["metrics"])
        db.execute(
            "UPDATE runs SET metrics = ? WHERE run_id = ?",
            (json.dumps(summary, separators=(",", ":")), run_id),
        )

    @handles("AnomalyDetected")
    def anomaly(self, db: sqlite3.Connection, event: Event) -> None:
        if event.data["detector"] == "heartbeat_lost":  # written by a watcher: not a sign of life
            run_id = event.stream.removeprefix("run/")
            db.execute(
                "UPDATE runs SET anomalies = anomalies + 1, lost_at = ? WHERE run_id = ?",
                (event.data["last_seen"], run_id),
            )
            return
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


def _real(column: str) -> str:
    # 17 significant digits: a float64 comes back as the same float64 (json_quote keeps 15).
    return f"CASE WHEN {column} IS NULL THEN 'null' ELSE printf('%!.17g', {column}) END"


_TABLE_JSON = f"""
SELECT '[' || coalesce(group_concat(row, ','), '') || ']' FROM (SELECT
    '{{"id":' || json_quote(run_id) || ',"project":' || json_quote(project)
    || ',"name":' || json_quote(name) || ',"status":' || json_quote(
        CASE WHEN status = 'running' AND ?1 - last_seen > ?2 THEN 'crashed' ELSE status END)
    || ',"started":' || {_real("started")} || ',"duration_s":' || {_real("duration_s")}
    || ',"base_model":' || json_quote(base_model) || ',"datasets":' || datasets
    || ',"tags":' || tags || ',"config":' || config || ',"metrics":' || metrics
    || ',"anomalies":' || anomalies || ',"checkpoints":' || checkpoints || '}}' AS row
    FROM runs /*where*/ ORDER BY started DESC)
"""

_JSON_COLUMNS = frozenset({"datasets", "tags", "config", "metrics"})


class RunsIndex:
    def __init__(self, db: sqlite3.Connection, heartbeat_timeout_s: float) -> None:
        self.db = db
        self.timeout = heartbeat_timeout_s

    def rows(self, where: str | None = None, *, project: str | None = None) -> list[dict[str, Any]]:
        """Every run (newest first) as a dict with its config and metric summaries, filtered
        by a query (see ``fmforge.tracking.query``)."""
        predicate = parse(where) if where else None
        out = []
        for run in self._rows(project):
            run = {key: json.loads(value) if key in _JSON_COLUMNS else value
                   for key, value in run.items()}  # fmt: skip
            if predicate is None or predicate(run):
                out.append(run)
        return out

    def table_json(self, where: str | None = None, *, project: str | None = None) -> str:
        """``rows()`` as a JSON array (what the dashboard's runs table fetches). Unfiltered, it
        is assembled by SQLite from each run's stored JSON without decoding it."""
        if where:
            return json.dumps(self.rows(where, project=project))
        query = _TABLE_JSON.replace("/*where*/", "WHERE project = ?3" if project else "")
        params = (time.time(), self.timeout, *([project] if project else []))
        (text,) = self.db.execute(query, params).fetchone()
        return str(text)

    def _rows(self, project: str | None) -> Iterator[dict[str, Any]]:
        """Each run's columns, the JSON ones still as text; a silent running run is crashed."""
        now = time.time()
        query = "SELECT * FROM runs" + (" WHERE project = ?" if project else "")
        for row in self.db.execute(query + " ORDER BY started DESC", (project,) if project else ()):
            (run_id, proj, name, status, started, last_seen, duration, base_model, datasets,
             tags, config, anomalies, checkpoints, metrics, _lost_at) = row  # fmt: skip
            if status == "running" and now - last_seen > self.timeout:
                status = "crashed"
            yield {
                "id": run_id, "project": proj, "name": name, "status": status,
                "started": started, "duration_s": duration, "base_model": base_model,
                "datasets": datasets, "tags": tags, "config": config, "metrics": metrics,
                "anomalies": anomalies, "checkpoints": checkpoints,
            }  # fmt: skip

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
