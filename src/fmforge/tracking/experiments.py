"""Experiments (MLflow's name for a project) as a projection of the ``experiment/<id>`` streams.

An experiment is created once (``ExperimentCreated``, with its tags), renamed
(``ExperimentRenamed``), deleted and restored (``ExperimentDeleted``/``ExperimentRestored``:
MLflow's lifecycle stage; nothing is erased) and tagged (``ExperimentTagsSet``). ``0`` is
MLflow's ``Default``, present without an event. A project that fmforge runs use without an
experiment event (``start_run("sentiment")``) is an experiment too, with the id
``project_experiment_id(name)``: stable, derived from the name, so native projects appear to
MLflow clients without anything being written on a read.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import blake3

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements
from fmforge.tracking.views import epoch_seconds

DEFAULT_ID = "0"
DEFAULT_NAME = "Default"
_SCHEMA = """
CREATE TABLE experiments (
    experiment_id TEXT PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL,
    tags TEXT NOT NULL, lifecycle TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    former TEXT NOT NULL
);
"""


def project_experiment_id(project: str) -> str:
    """The experiment id under which a project without an ``ExperimentCreated`` appears."""
    return "p" + blake3.blake3(project.encode()).hexdigest()[:15]


@dataclass
class Experiment:
    experiment_id: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    lifecycle: str = "active"
    created: float = 0.0
    updated: float = 0.0
    former: list[str] = field(default_factory=list)  # names it had before a rename
    recorded: bool = True  # False: a native project, or Default, with no event of its own


class ExperimentIndex:
    """The query side of ``ExperimentsView``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def recorded(self) -> dict[str, Experiment]:
        """Every experiment with events (and ``Default``), by id, in creation order."""
        found = {DEFAULT_ID: Experiment(DEFAULT_ID, DEFAULT_NAME, recorded=False)}
        for row in self.db.execute(
            "SELECT experiment_id, name, tags, lifecycle, created, updated, former "
            "FROM experiments ORDER BY seq"
        ):
            experiment_id, name, tags, lifecycle, created, updated, former = row
            found[experiment_id] = Experiment(
                experiment_id, name, json.loads(tags), lifecycle, created, updated,
                json.loads(former),
            )  # fmt: skip
        return found

    def with_projects(self, projects: dict[str, float]) -> dict[str, Experiment]:
        """``recorded()`` plus every project (name -> first run's start) that no experiment
        is or was named, under ``project_experiment_id``."""
        found = self.recorded()
        names = {e.name for e in found.values()} | {n for e in found.values() for n in e.former}
        for project, started in projects.items():
            if project not in names:
                experiment_id = project_experiment_id(project)
                found[experiment_id] = Experiment(
                    experiment_id, project, created=started, updated=started, recorded=False
                )
        return found

    def next_id(self) -> str:
        """The next numeric id (MLflow's server numbers them as well)."""
        numbers = [int(e) for (e,) in self.db.execute("SELECT experiment_id FROM experiments")
                   if e.isdigit()]  # fmt: skip
        return str(max(numbers, default=0) + 1)


class ExperimentsView(Projection[ExperimentIndex]):
    name = "experiments"
    version = 2
    tables = ("experiments",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> ExperimentIndex:
        return ExperimentIndex(db)

    @handles("ExperimentCreated")
    def created(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        when = epoch_seconds(event.time)
        db.execute(
            "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, 'active', ?, ?, '[]')",
            (d["experiment_id"], d["name"], event.seq, json.dumps(d.get("tags", {})), when, when),
        )

    @handles("ExperimentRenamed")
    def renamed(self, db: sqlite3.Connection, event: Event) -> None:
        row = self._row(db, event)
        if row is None:
            return
        former = json.loads(row["former"])
        if row["name"] not in former:
            former.append(row["name"])
        self._update(db, event, name=event.data["name"], former=json.dumps(former))

    @handles("ExperimentDeleted", "ExperimentRestored")
    def lifecycle(self, db: sqlite3.Connection, event: Event) -> None:
        stage = "deleted" if event.type == "ExperimentDeleted" else "active"
        self._update(db, event, lifecycle=stage)

    @handles("ExperimentTagsSet")
    def tagged(self, db: sqlite3.Connection, event: Event) -> None:
        row = self._row(db, event)
        if row is None:
            return
        tags = {**json.loads(row["tags"]), **event.data["tags"]}
        for key in event.data["deleted"]:
            tags.pop(key, None)
        self._update(db, event, tags=json.dumps(tags))

    def _row(self, db: sqlite3.Connection, event: Event) -> dict[str, Any] | None:
        found = db.execute(
            "SELECT name, tags, former FROM experiments WHERE experiment_id = ?",
            (event.data["experiment_id"],),
        ).fetchone()
        return None if found is None else dict(zip(("name", "tags", "former"), found, strict=True))

    def _update(self, db: sqlite3.Connection, event: Event, **columns: str) -> None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        db.execute(
            f"UPDATE experiments SET {sets}, updated = ? WHERE experiment_id = ?",
            (*columns.values(), epoch_seconds(event.time), event.data["experiment_id"]),
        )
