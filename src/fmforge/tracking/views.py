"""Runs as projections: the runs table, each run's records and chunks, and experiments.

``repo.view(RunsView)`` gives a ``RunsIndex``. The ``runs`` table has one row per run with its
metric summaries stored as the JSON the dashboard sends, built from the events alone (chunks
are never opened), so listing and filtering a thousand runs is a query. ``run_items`` keeps
what a run page shows (anomalies, checkpoints, evaluations, samples), ``run_chunks`` the
metric chunks in order with the step range each covers, ``metric_series``/``metric_blocks``
each metric's summary pyramid (``fmforge.tracking.pyramid``). A run whose last event is older than
the heartbeat timeout and that never finished reads as ``crashed``: derived at read time, so a
read never writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from fmforge.errors import QueryError, RunNotFound
from fmforge.hints import did_you_mean
from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements
from fmforge.tracking.environment import flatten
from fmforge.tracking.pyramid import SCHEMA as PYRAMID_SCHEMA
from fmforge.tracking.pyramid import (
    SeriesKey,
    SeriesValues,
    apply_blocks,
    apply_pyramid,
    merge_series,
    pyramid_entries,
    series_values,
    upsert_series,
)
from fmforge.tracking.query import metric_of, parse_query

HEARTBEAT_S = 30.0
"""A running run writes at least this often (a heartbeat when it has nothing else to say)."""
DEFAULT_TIMEOUT_S = 3 * HEARTBEAT_S

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, last_seen REAL NOT NULL, duration_s REAL, base_model TEXT,
    datasets TEXT NOT NULL, tags TEXT NOT NULL, config TEXT NOT NULL, anomalies INTEGER NOT NULL,
    checkpoints INTEGER NOT NULL, metrics TEXT NOT NULL, lost_at REAL,
    config_shown TEXT NOT NULL, environment TEXT NOT NULL, tag_values TEXT NOT NULL,
    end_time REAL, experiment TEXT, lifecycle TEXT NOT NULL DEFAULT 'active', parent TEXT
);
CREATE INDEX runs_by_parent ON runs (parent);
CREATE INDEX runs_by_start ON runs (started);
CREATE INDEX runs_by_name ON runs (project, name);
CREATE TABLE run_items (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE run_chunks (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, digest TEXT NOT NULL, bytes INTEGER NOT NULL,
    first_step INTEGER, last_step INTEGER, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""
_ITEM_KINDS = {
    "AnomalyDetected": "anomaly",
    "CheckpointLogged": "checkpoint",
    "EvalLogged": "eval",
    "SampleLogged": "sample",
    "InputsLogged": "input",
    "OutputsLogged": "output",
}
PARENT_TAG = "mlflow.parentRunId"


@dataclass
class RunRecord:
    """A run as its events tell it."""

    id: str
    project: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    started: float = 0.0
    last_seen: float = 0.0
    duration_s: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    base_model: str | None = None
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    tag_values: dict[str, str] = field(default_factory=dict)  # key-value tags (set_tags)
    end_time: float | None = None
    experiment: str | None = None  # the MLflow experiment id it was started in, if one
    lifecycle: str = "active"  # or "deleted" (MLflow's delete_run; history stays)
    parent: str | None = None  # the parent run's id (the tag mlflow.parentRunId)
    children: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkRef:
    """One metric chunk of a run: its digest and the steps it covers."""

    digest: str
    first_step: int | None
    last_step: int | None
    metrics: tuple[str, ...]


def epoch_seconds(iso: str) -> float:
    """An event's ISO time as seconds since the epoch (0 for none)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else 0.0


def merge_summaries(summary: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]]) -> None:
    """Fold one chunk's per-metric summaries into a run's (in place)."""
    for name, new in metrics.items():
        old = summary.get(name)
        if old is None:
            summary[name] = dict(new)
            continue
        old["count"] += new["count"]
        old["non_finite"] += new["non_finite"]
        low, high = new["min"], new["max"]
        if low is not None and (old["min"] is None or low < old["min"]):
            old["min"] = low
        if high is not None and (old["max"] is None or high > old["max"]):
            old["max"] = high
        if new["last_step"] >= old["last_step"]:
            old["last"], old["last_step"] = new["last"], new["last_step"]
        if "step_min" in old and "step_max" in old and "step_min" in new and "step_max" in new:
            old["step_min"] = min(old["step_min"], new["step_min"])
            old["step_max"] = max(old["step_max"], new["step_max"])
        else:  # a chunk without a step range: the run's range is unknown from here on
            old.pop("step_min", None)
            old.pop("step_max", None)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class RunsView(Projection["RunsIndex"]):
    name = "runs"
    version = 7
    tables = ("runs", "run_items", "run_chunks", "metric_series", "metric_blocks")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)
        create_statements(db, PYRAMID_SCHEMA)

    def read(self, db: sqlite3.Connection) -> RunsIndex:
        return RunsIndex(db)

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
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, 0, 0, "
            "'{}', NULL, ?, '{}', '{}', NULL, ?, 'active', NULL)",
            (
                d["run"], d["project"], d["name"], d["started"], epoch_seconds(event.time),
                d["base_model"], _dumps(d["datasets"]), _dumps(d.get("tags", [])),
                _dumps(d["config_flat"]), _dumps(d["config"]), d.get("experiment"),
            ),
        )  # fmt: skip

    @handles("ParamsLogged")
    def params(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        row = db.execute(
            "SELECT config, config_shown FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return  # a run whose start is not recorded: nothing to add to
        config, shown = row
        params = event.data["params"]
        db.execute(
            "UPDATE runs SET config = ?, config_shown = ? WHERE run_id = ?",
            (
                _dumps({**json.loads(config), **params}),
                _dumps({**flatten(json.loads(shown)), **params}),
                run_id,
            ),
        )

    @handles("RunEnvironment")
    def environment(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute("UPDATE runs SET environment = ? WHERE run_id = ?", (_dumps(event.data), run_id))

    @handles("TagsSet")
    def tags(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        row = db.execute("SELECT tag_values FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return
        (text,) = row
        merged = {**json.loads(text), **event.data["tags"]}
        db.execute(
            "UPDATE runs SET tag_values = ?, parent = ? WHERE run_id = ?",
            (_dumps(merged), merged.get(PARENT_TAG), run_id),
        )

    @handles("TagsDeleted")
    def tags_deleted(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        row = db.execute("SELECT tag_values FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return
        tags = json.loads(row[0])
        for key in event.data["keys"]:
            tags.pop(key, None)
        db.execute(
            "UPDATE runs SET tag_values = ?, parent = ? WHERE run_id = ?",
            (_dumps(tags), tags.get(PARENT_TAG), run_id),
        )

    @handles("RunResumed")
    def resumed(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute(
            "UPDATE runs SET status = 'running', duration_s = NULL, end_time = NULL "
            "WHERE run_id = ?",
            (run_id,),
        )

    @handles("RunDeleted", "RunRestored")
    def lifecycle(self, db: sqlite3.Connection, event: Event) -> None:
        stage = "deleted" if event.type == "RunDeleted" else "active"
        run_id = event.stream.removeprefix("run/")
        db.execute("UPDATE runs SET lifecycle = ? WHERE run_id = ?", (stage, run_id))

    @handles("ArtifactLogged", "ArtifactDeleted")
    def artifact(self, db: sqlite3.Connection, event: Event) -> None:
        if event.stream.startswith("run/"):
            self._seen(db, event)  # the files themselves: ``tracking.artifacts``

    @handles("RunHeartbeat")
    def alive(self, db: sqlite3.Connection, event: Event) -> None:
        self._seen(db, event)

    @handles("SampleLogged", "EvalLogged", "InputsLogged", "OutputsLogged")
    def item(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute(
            "INSERT INTO run_items VALUES (?, ?, ?, ?)",
            (run_id, event.seq, _ITEM_KINDS[event.type], _dumps(event.data)),
        )

    def apply_batch(self, db: sqlite3.Connection, events: list[Event]) -> None:
        """Like one handler call per event, but the metric summaries of consecutive
        ``MetricsLogged`` events are merged in memory and written once per run: a run logs
        one every second, so replaying a week-long run is a merge, not a million UPDATEs."""
        summaries: dict[str, dict[str, Any]] = {}
        seen: dict[str, str] = {}  # the newest event time per run (ISO times sort as text)
        chunks: list[tuple[Any, ...]] = []
        series: dict[SeriesKey, SeriesValues] = {}
        blocks: list[tuple[str, list[Any]]] = []

        def flush() -> None:
            for run_id, summary in summaries.items():
                db.execute(
                    "UPDATE runs SET metrics = ?, last_seen = max(last_seen, ?) WHERE run_id = ?",
                    (_dumps(summary), epoch_seconds(seen[run_id]), run_id),
                )
            db.executemany("INSERT INTO run_chunks VALUES (?, ?, ?, ?, ?, ?, ?)", chunks)
            upsert_series(db, series)
            for run_id, entries in blocks:  # in order: a block's merges follow its events
                apply_blocks(db, run_id, entries)
            summaries.clear()
            seen.clear()
            chunks.clear()
            series.clear()
            blocks.clear()

        for event in events:
            if event.type != "MetricsLogged":
                if summaries or chunks:
                    flush()
                self.dispatch(db, event)
                continue
            run_id = event.stream.removeprefix("run/")
            summary = summaries.get(run_id)
            if summary is None:
                row = db.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if row is None:
                    continue  # a run whose start is not recorded
                summary = summaries[run_id] = orjson.loads(row[0])
            merge_summaries(summary, event.data["metrics"])
            when = event.time
            if when > seen.get(run_id, ""):
                seen[run_id] = when
            row = _chunk_row(run_id, event)
            chunks.append(row)
            legacy, entries = pyramid_entries(self.objects, run_id, event.data)
            for key, values in series_values(run_id, event.data, legacy, _span(row)):
                before = series.get(key)
                series[key] = values if before is None else merge_series(before, values)
            if entries:
                blocks.append((run_id, entries))
        flush()

    @handles("MetricsLogged")
    def metrics(self, db: sqlite3.Connection, event: Event) -> None:
        # Kept as the JSON the dashboard sends: listing runs is then string assembly, not
        # 50 dicts per run (see RunsIndex.table_json).
        run_id = self._seen(db, event)
        row = db.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return
        summary = orjson.loads(row[0])
        merge_summaries(summary, event.data["metrics"])
        db.execute("UPDATE runs SET metrics = ? WHERE run_id = ?", (_dumps(summary), run_id))
        row = _chunk_row(run_id, event)
        db.execute("INSERT INTO run_chunks VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        apply_pyramid(db, self.objects, run_id, event.data, _span(row))

    @handles("AnomalyDetected")
    def anomaly(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = event.stream.removeprefix("run/")
        if event.data["detector"] == "heartbeat_lost":  # written by a watcher: not a sign of life
            db.execute(
                "UPDATE runs SET anomalies = anomalies + 1, lost_at = ? WHERE run_id = ?",
                (event.data.get("last_seen", 0.0), run_id),
            )
        else:
            self._seen(db, event)
            db.execute("UPDATE runs SET anomalies = anomalies + 1 WHERE run_id = ?", (run_id,))
        db.execute(
            "INSERT INTO run_items VALUES (?, ?, 'anomaly', ?)",
            (run_id, event.seq, _dumps(event.data)),
        )

    @handles("CheckpointLogged")
    def checkpoint(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute("UPDATE runs SET checkpoints = checkpoints + 1 WHERE run_id = ?", (run_id,))
        db.execute(
            "INSERT INTO run_items VALUES (?, ?, 'checkpoint', ?)",
            (run_id, event.seq, _dumps(event.data)),
        )

    @handles("RunFinished")
    def finished(self, db: sqlite3.Connection, event: Event) -> None:
        run_id = self._seen(db, event)
        db.execute(
            "UPDATE runs SET status = ?, duration_s = ?, end_time = ? WHERE run_id = ?",
            (event.data["status"], event.data["duration_s"], epoch_seconds(event.time), run_id),
        )


def _chunk_row(run_id: str, event: Event) -> tuple[Any, ...]:
    data = event.data
    low = high = None
    ranged = True  # chunks written before steps were summarised have no range: read always
    for summary in data["metrics"].values():
        if not summary["count"]:
            continue
        if "step_min" not in summary or "step_max" not in summary:
            ranged = False
            break
        if low is None or summary["step_min"] < low:
            low = summary["step_min"]
        if high is None or summary["step_max"] > high:
            high = summary["step_max"]
    if not ranged:
        low = high = None
    names = orjson.dumps(sorted(data["metrics"])).decode()
    return (run_id, event.seq, data["chunk"], data["bytes"], low, high, names)


def _span(chunk_row: tuple[Any, ...]) -> int:
    """The step range a chunk covers (0 when unknown)."""
    first, last = chunk_row[4], chunk_row[5]
    if first is None or last is None:
        return 0
    return max(0, min(int(last - first), 2**63 - 1))


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
    || ',"anomalies":' || anomalies || ',"checkpoints":' || checkpoints
    || ',"tag_values":' || tag_values || ',"parent":' || json_quote(parent) || '}}' AS row
    FROM runs WHERE lifecycle = 'active' /*where*/ ORDER BY started DESC)
"""

_JSON_COLUMNS = frozenset({"datasets", "tags", "config", "metrics", "tag_values"})


def _check_metrics(fields: list[str], runs: list[dict[str, Any]], project: str | None) -> None:
    """Refuse a metric no run in ``runs`` has (when there are runs): a typo matches nothing."""
    if not runs:
        return
    known = {name for run in runs for name in run["metrics"]}
    for name in fields:
        metric = metric_of(name)
        if metric is not None and metric not in known:
            where = f" of project {project!r}" if project else ""
            raise QueryError(
                f"unknown metric {metric!r} in {name!r}: no run{where} has it"
                f"{did_you_mean(metric, known)}"
            )


class RunsIndex:
    """The query side of ``RunsView``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def rows(
        self,
        where: str | None = None,
        *,
        project: str | None = None,
        heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S,
        strict_metrics: bool = True,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every run (newest first) as a dict with its config and metric summaries, filtered
        by a query (see ``fmforge.tracking.query``); the ``limit`` newest ones when given. A
        metric the query names that no run of the selection has is refused as a typo
        (``QueryError`` with the closest names) unless ``strict_metrics`` is off (MLflow's
        search matches nothing instead)."""
        predicate, fields = parse_query(where) if where else (None, [])
        if limit is not None and limit <= 0:
            return []
        sql_limit = limit if predicate is None else None
        runs = [
            {key: json.loads(value) if key in _JSON_COLUMNS else value
             for key, value in run.items()}
            for run in self._rows(project, heartbeat_timeout_s, sql_limit)
        ]  # fmt: skip
        if strict_metrics:
            _check_metrics(fields, runs, project)
        out: list[dict[str, Any]] = []
        for run in runs:
            if predicate is None or predicate(run):
                out.append(run)
                if len(out) == limit:
                    break
        return out

    def table_json(
        self,
        where: str | None = None,
        *,
        project: str | None = None,
        heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """``rows()`` as a JSON array (what the dashboard's runs table fetches). Unfiltered, it
        is assembled by SQLite from each run's stored JSON without decoding it."""
        if where:
            rows = self.rows(where, project=project, heartbeat_timeout_s=heartbeat_timeout_s)
            return json.dumps(rows)
        query = _TABLE_JSON.replace("/*where*/", "AND project = ?3" if project else "")
        params = (time.time(), heartbeat_timeout_s, *([project] if project else []))
        (text,) = self.db.execute(query, params).fetchone()
        return str(text)

    def _rows(
        self, project: str | None, timeout: float, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Each run's columns, the JSON ones still as text; a silent running run is crashed."""
        now = time.time()
        query = (
            "SELECT run_id, project, name, status, started, last_seen, duration_s, base_model, "
            "datasets, tags, config, anomalies, checkpoints, metrics, tag_values, parent FROM runs"
            " WHERE lifecycle = 'active'"
            + (" AND project = ?" if project else "")
            + " ORDER BY started DESC"
            + (f" LIMIT {int(limit)}" if limit is not None else "")
        )
        for row in self.db.execute(query, (project,) if project else ()):
            (run_id, proj, name, status, started, last_seen, duration, base_model, datasets,
             tags, config, anomalies, checkpoints, metrics, tag_values, parent) = row  # fmt: skip
            if status == "running" and now - last_seen > timeout:
                status = "crashed"
            yield {
                "id": run_id, "project": proj, "name": name, "status": status,
                "started": started, "duration_s": duration, "base_model": base_model,
                "datasets": datasets, "tags": tags, "config": config, "metrics": metrics,
                "anomalies": anomalies, "checkpoints": checkpoints, "tag_values": tag_values,
                "parent": parent,
            }  # fmt: skip

    def resolve(self, id_or_name: str) -> str:
        """A run id from an id, a unique id prefix or suffix (4+ characters: ids printed short
        are their tails) or a unique run name."""
        part = id_or_name.replace("%", "").replace("_", "")
        rows = self.db.execute(
            "SELECT run_id FROM runs WHERE run_id = ? OR name = ? OR (length(?) >= 4 AND "
            "(run_id LIKE ? || '%' OR run_id LIKE '%' || ?))",
            (id_or_name, id_or_name, part, part, part),
        ).fetchall()
        if not rows:
            names = [r[0] for r in self.db.execute("SELECT DISTINCT name FROM runs")]
            hint = did_you_mean(id_or_name, names)
            raise RunNotFound(
                f"no run with id or name {id_or_name!r}{hint} (see `fmforge runs ls`)"
            )
        if len(rows) > 1:
            exact = [r for r in rows if r[0] == id_or_name]
            if exact:
                return str(exact[0][0])
            raise RunNotFound(f"{id_or_name!r} names {len(rows)} runs; use the run id")
        return str(rows[0][0])

    def names_in(self, project: str) -> set[str]:
        rows = self.db.execute("SELECT name FROM runs WHERE project = ?", (project,))
        return {r[0] for r in rows}

    def run(self, run_id: str, *, heartbeat_timeout_s: float = DEFAULT_TIMEOUT_S) -> RunRecord:
        """Everything the events of run ``run_id`` say."""
        row = self.db.execute(
            "SELECT project, name, status, started, last_seen, duration_s, base_model, "
            "datasets, config_shown, metrics, environment, tag_values, end_time, experiment, "
            "lifecycle, parent FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r}")
        (project, name, status, started, last_seen, duration, base_model, datasets, config,
         metrics, environment, tag_values, end_time, experiment, lifecycle,
         parent) = row  # fmt: skip
        if status == "running" and time.time() - last_seen > heartbeat_timeout_s:
            status = "crashed"
        record = RunRecord(
            run_id, project, name, json.loads(config), status, started, last_seen, duration,
            json.loads(environment), json.loads(datasets), base_model, json.loads(metrics),
            tag_values=json.loads(tag_values), end_time=end_time, experiment=experiment,
            lifecycle=lifecycle, parent=parent,
        )  # fmt: skip
        record.children = [r for (r,) in self.db.execute(
            "SELECT run_id FROM runs WHERE parent = ? ORDER BY started", (run_id,))]  # fmt: skip
        lists = {"anomaly": record.anomalies, "checkpoint": record.checkpoints,
                 "eval": record.evals, "sample": record.samples, "input": record.inputs,
                 "output": record.outputs}  # fmt: skip
        for kind, data in self.db.execute(
            "SELECT kind, data FROM run_items WHERE run_id = ? ORDER BY seq", (run_id,)
        ):
            lists[kind].append(json.loads(data))
        record.chunks = [d for (d,) in self.db.execute(
            "SELECT digest FROM run_chunks WHERE run_id = ? ORDER BY seq", (run_id,))]  # fmt: skip
        return record

    def chunks(
        self,
        run_id: str,
        *,
        metric: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[ChunkRef]:
        """The run's metric chunks in logging order; with ``metric`` only those holding it,
        with ``start``/``end`` only those whose steps may reach into that range."""
        query = "SELECT digest, first_step, last_step, metrics FROM run_chunks WHERE run_id = ?"
        params: list[Any] = [run_id]
        if end is not None:
            query += " AND (first_step IS NULL OR first_step <= ?)"
            params.append(end)
        if start is not None:
            query += " AND (last_step IS NULL OR last_step >= ?)"
            params.append(start)
        out = []
        for digest, first, last, names in self.db.execute(query + " ORDER BY seq", params):
            metrics = tuple(json.loads(names))
            if metric is None or metric in metrics:
                out.append(ChunkRef(digest, first, last, metrics))
        return out

    def dataset_usage(self) -> list[dict[str, Any]]:
        """Every run that named datasets when it started (``NAME@REF`` as written), oldest
        first, with the checkpoints it committed (model, commit, step)."""
        out = []
        for run_id, name, used in self.db.execute(
            "SELECT run_id, name, datasets FROM runs WHERE datasets != '[]' ORDER BY started"
        ):
            checkpoints = [
                json.loads(data)
                for (data,) in self.db.execute(
                    "SELECT data FROM run_items WHERE run_id = ? AND kind = 'checkpoint' "
                    "ORDER BY seq",
                    (run_id,),
                )
            ]
            out.append({"id": run_id, "name": name, "datasets": json.loads(used),
                        "checkpoints": checkpoints})  # fmt: skip
        return out
