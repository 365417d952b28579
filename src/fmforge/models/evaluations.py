"""Evaluations of model commits as a projection: every ``CommitEvaluated``, by commit.

``repo.view(ModelEvaluations)`` gives an ``EvaluationIndex``; ``model show`` and ``model log``
print a commit's evaluations from it, newest last.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fmforge.ledger import Event, Projection, handles


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    model: str
    commit: str
    dataset: str
    dataset_version: str
    split: str | None
    metrics: dict[str, float | str]
    rows: int
    run: str | None
    task: str | None
    actor: str
    time: str
    seq: int

    @property
    def where(self) -> str:
        """``youtube@v3:test`` (the dataset, and the split when one was evaluated)."""
        return self.dataset + (f":{self.split}" if self.split else "")

    def summary(self) -> str:
        """``accuracy 0.9560, macro_f1 0.9558 on youtube@v3:test (250 rows)``."""
        values = ", ".join(f"{k} {_number(v)}" for k, v in sorted(self.metrics.items()))
        return f"{values} on {self.where} ({self.rows} rows)"

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "dataset_version": self.dataset_version,
            "split": self.split, "metrics": self.metrics, "rows": self.rows, "run": self.run,
            "task": self.task, "actor": self.actor, "time": self.time,
        }  # fmt: skip


class ModelEvaluations(Projection["EvaluationIndex"]):
    name = "model_evaluations"
    tables = ("model_evaluations",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE model_evaluations (seq INTEGER PRIMARY KEY, model TEXT NOT NULL, "
            "commit_id TEXT NOT NULL, dataset TEXT NOT NULL, dataset_version TEXT NOT NULL, "
            "split TEXT, metrics TEXT NOT NULL, rows INTEGER NOT NULL, run TEXT, task TEXT, "
            "actor TEXT NOT NULL, time TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX model_evaluations_by_commit ON model_evaluations (commit_id)")

    def read(self, db: sqlite3.Connection) -> EvaluationIndex:
        return EvaluationIndex(db)

    @handles("CommitEvaluated")
    def evaluated(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR IGNORE INTO model_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq, d["model"], d["commit"], d["dataset"], d["dataset_version"],
                d["split"], json.dumps(d["metrics"], sort_keys=True), d["rows"], d.get("run"),
                d.get("task"), str(event.meta.get("actor", "")), event.time,
            ),
        )  # fmt: skip


class EvaluationIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def of_commit(self, commit: str) -> list[EvaluationRecord]:
        """Every evaluation of ``commit``, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM model_evaluations WHERE commit_id = ? ORDER BY seq", (commit,)
        )
        return [_record(r) for r in rows]

    def of_model(self, model: str) -> dict[str, list[EvaluationRecord]]:
        """commit -> its evaluations (oldest first), for every evaluated commit of ``model``."""
        out: dict[str, list[EvaluationRecord]] = {}
        for row in self.db.execute(
            "SELECT * FROM model_evaluations WHERE model = ? ORDER BY seq", (model,)
        ):
            record = _record(row)
            out.setdefault(record.commit, []).append(record)
        return out


def _record(row: Any) -> EvaluationRecord:
    seq, model, commit, dataset, version, split, metrics, rows, run, task, actor, when = row
    return EvaluationRecord(
        model, commit, dataset, version, split, json.loads(metrics), rows, run, task, actor,
        when, seq,
    )  # fmt: skip


def _number(value: float | str) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
