"""The diagonal Fishers measured on commits, as a projection.

``FisherComputed`` (``models.events``) is recorded on the model's stream; this read model
answers "the newest Fisher of this commit" (what Fisher-weighted merging reads, so a
data-aware merge needs no data). Reached as ``repo.view(ModelMeasurements)``. Evaluations
(``CommitEvaluated``) are the ``ModelEvaluations`` view's (``models.evaluations``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_SCHEMA = """
CREATE TABLE model_fisher (
    seq INTEGER PRIMARY KEY, model TEXT NOT NULL, commit_id TEXT NOT NULL,
    object TEXT NOT NULL, dataset TEXT NOT NULL, dataset_version TEXT NOT NULL,
    examples INTEGER NOT NULL, task TEXT
);
CREATE INDEX model_fisher_by_commit ON model_fisher (commit_id, seq);
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


class ModelMeasurements(Projection[MeasurementIndex]):
    name = "model_measurements"
    version = 2
    tables = ("model_fisher",)

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
