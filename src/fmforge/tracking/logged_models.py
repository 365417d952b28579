"""MLflow's logged models (``mlflow.<flavor>.log_model``, autologging) as a projection of the
``logged-model/<id>`` streams.

A logged model is created pending (``LoggedModelCreated``: its experiment, name, the run that
made it, params and tags), its files are uploaded as artifacts of its stream
(``tracking.artifacts``), then it is finalized (``LoggedModelFinalized``: READY or FAILED).
Registering it in the model registry commits those files (``server/mlflow_registry.py``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements
from fmforge.tracking.views import epoch_seconds

STREAM_PREFIX = "logged-model/"
_SCHEMA = """
CREATE TABLE logged_models (
    model_id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, name TEXT NOT NULL, run TEXT,
    model_type TEXT, params TEXT NOT NULL, tags TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, lifecycle TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE INDEX logged_models_by_run ON logged_models (run);
"""
_COLUMNS = ("model_id", "experiment_id", "name", "run", "model_type", "params", "tags",
            "status", "created", "updated", "lifecycle")  # fmt: skip


@dataclass
class LoggedModel:
    model_id: str
    experiment_id: str
    name: str
    run: str | None
    model_type: str | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "PENDING"
    created: float = 0.0
    updated: float = 0.0
    lifecycle: str = "active"


def _model(row: tuple[Any, ...]) -> LoggedModel:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["params"] = json.loads(values["params"])
    values["tags"] = json.loads(values["tags"])
    return LoggedModel(**values)


class LoggedModelIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, model_id: str) -> LoggedModel | None:
        row = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM logged_models WHERE model_id = ?", (model_id,)
        ).fetchone()
        return None if row is None else _model(row)

    def all(self, experiment_ids: list[str] | None = None) -> list[LoggedModel]:
        """Every active logged model (of ``experiment_ids`` when given), newest first."""
        rows = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM logged_models WHERE lifecycle = 'active' "
            "ORDER BY created DESC, seq DESC"
        )
        found = [_model(row) for row in rows]
        if experiment_ids:
            found = [m for m in found if m.experiment_id in experiment_ids]
        return found

    def of_run(self, run_id: str) -> list[LoggedModel]:
        rows = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM logged_models WHERE run = ? AND "
            "lifecycle = 'active' ORDER BY seq",
            (run_id,),
        )
        return [_model(row) for row in rows]


class LoggedModelsView(Projection[LoggedModelIndex]):
    name = "logged_models"
    tables = ("logged_models",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> LoggedModelIndex:
        return LoggedModelIndex(db)

    @handles("LoggedModelCreated")
    def created(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR IGNORE INTO logged_models VALUES "
            "(?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, 'active', ?)",
            (d["model_id"], d["experiment_id"], d["name"], d["run"], d["model_type"],
             json.dumps(d["params"]), json.dumps(d["tags"]), d["created"], d["created"],
             event.seq),
        )  # fmt: skip

    def _id(self, event: Event) -> str:
        return event.stream.removeprefix(STREAM_PREFIX)

    @handles("LoggedModelFinalized")
    def finalized(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE logged_models SET status = ?, updated = ? WHERE model_id = ?",
            (event.data["status"], epoch_seconds(event.time), self._id(event)),
        )

    @handles("LoggedModelTagsSet", "LoggedModelParamsLogged")
    def annotated(self, db: sqlite3.Connection, event: Event) -> None:
        column = "tags" if event.type == "LoggedModelTagsSet" else "params"
        row = db.execute(
            f"SELECT {column} FROM logged_models WHERE model_id = ?", (self._id(event),)
        ).fetchone()
        if row is None:
            return
        values = {**json.loads(row[0]), **event.data[column]}
        for key in event.data.get("deleted", []):
            values.pop(key, None)
        db.execute(
            f"UPDATE logged_models SET {column} = ?, updated = ? WHERE model_id = ?",
            (json.dumps(values), epoch_seconds(event.time), self._id(event)),
        )

    @handles("LoggedModelDeleted")
    def deleted(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE logged_models SET lifecycle = 'deleted' WHERE model_id = ?", (self._id(event),)
        )
