"""What was measured on a commit: its evaluations and its diagonal Fisher, as a projection.

``CommitEvaluated`` and ``FisherComputed`` (``models.events``) are recorded on the model's
stream; this read model answers "the newest Fisher of this commit" (what Fisher-weighted
merging reads, so a data-aware merge needs no data) and "every evaluation of this commit" (what
a rebase re-runs on the rebased commit). Reached as ``repo.view(ModelMeasurements)``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_SCHEMA = """
CREATE TABLE model_fisher (
    seq INTEGER PRIMARY KEY, model TEXT NOT NULL, commit_id TEXT NOT NULL,
    object TEXT NOT NULL, dataset TEXT NOT NULL, dataset_version TEXT NOT NULL,
    examples INTEGER NOT NULL, task TEXT
);
CREATE INDEX model_fisher_by_commit ON model_fisher (commit_id, seq);
CREATE TABLE model_evaluations (
    seq INTEGER PRIMARY KEY, model TEXT NOT NULL, commit_id TEXT NOT NULL,
    dataset TEXT NOT NULL, dataset_version TEXT NOT NULL, split TEXT,
    metrics TEXT NOT NULL, rows_measured INTEGER NOT NULL, run TEXT, task TEXT
);
CREATE INDEX model_evaluations_by_commit ON model_evaluations (commit_id, seq);
"""


@dataclass(frozen=True, slots=True)
class FisherRecord:
    """A recorded diagonal Fisher: a safetensors object with the model's tensor names."""

    model: str
    commit: str
    object: str
    dataset: str
    dataset_version: str
    examples: int
    task: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    model: str
    commit: str
    dataset: str
    dataset_version: str
    split: str | None
    metrics: dict[str, Any]
    rows: int
    run: str | None
    task: str | None
    seq: int


class MeasurementIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def fisher(self, commit: str) -> FisherRecord | None:
        """The newest Fisher recorded for ``commit`` (a full commit id), or None."""
        row = self.db.execute(
            "SELECT model, commit_id, object, dataset, dataset_version, examples, task, seq "
            "FROM model_fisher WHERE commit_id = ? ORDER BY seq DESC LIMIT 1",
            (commit,),
        ).fetchone()
        return None if row is None else FisherRecord(*row)

    def evaluations(self, commit: str) -> list[EvaluationRecord]:
        """Every evaluation recorded for ``commit``, oldest first."""
        rows = self.db.execute(
            "SELECT model, commit_id, dataset, dataset_version, split, metrics, rows_measured, "
            "run, task, seq FROM model_evaluations WHERE commit_id = ? ORDER BY seq",
            (commit,),
        )
        return [
            EvaluationRecord(m, c, d, v, s, json.loads(metrics), n, run, task, seq)
            for m, c, d, v, s, metrics, n, run, task, seq in rows
        ]


class ModelMeasurements(Projection[MeasurementIndex]):
    name = "model_measurements"
    tables = ("model_fisher", "model_evaluations")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> MeasurementIndex:
        return MeasurementIndex(db)

    @handles("FisherComputed")
    def fisher(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO model_fisher VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq, d["model"], d["commit"], d["object"], d["dataset"],
                d["dataset_version"], d["examples"], d.get("task"),
            ),
        )  # fmt: skip

    @handles("CommitEvaluated")
    def evaluated(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO model_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq, d["model"], d["commit"], d["dataset"], d["dataset_version"],
                d.get("split"), json.dumps(d["metrics"], sort_keys=True), d["rows"],
                d.get("run"), d.get("task"),
            ),
        )  # fmt: skip
