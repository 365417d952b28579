"""MLflow's model registry as a projection of the model streams: registered models and their
numbered versions (``fmforge.models.events``: ``ModelRegistered``, ``ModelVersionCreated``, ...).

A version is a commit of the model; an alias is the branch ``alias/<name>`` (read from
``ModelRefs``), so ``open_model("clf@alias/champion")`` and MLflow's ``models:/clf@champion``
name the same weights. Re-registering a model after ``ModelUnregistered`` starts its version
numbers again at 1, as MLflow does; the old commits stay in the model's history.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

ALIAS_PREFIX = "alias/"
_SCHEMA = """
CREATE TABLE registered_models (
    model TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, tags TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, active INTEGER NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE model_versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, commit_id TEXT NOT NULL, source TEXT NOT NULL,
    run TEXT, logged_model TEXT, tags TEXT NOT NULL, description TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, deleted INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
"""


@dataclass
class RegisteredModel:
    model: str  # the fmforge model (the stream ``model/<model>``)
    name: str  # the name MLflow clients see (differs after a rename)
    description: str
    tags: dict[str, str]
    created: str  # ISO times of the events
    updated: str


@dataclass
class ModelVersion:
    model: str
    version: int
    commit: str
    source: str
    run: str | None
    logged_model: str | None
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    created: str = ""
    updated: str = ""


class RegistryIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def models(self) -> list[RegisteredModel]:
        rows = self.db.execute(
            "SELECT model, name, description, tags, created, updated FROM registered_models "
            "WHERE active = 1 ORDER BY name"
        )
        return [RegisteredModel(m, n, d, json.loads(t), c, u) for m, n, d, t, c, u in rows]

    def by_name(self, name: str) -> RegisteredModel | None:
        """The active registered model MLflow clients call ``name``."""
        for found in self.models():
            if found.name == name:
                return found
        return None

    def versions(self, model: str) -> list[ModelVersion]:
        rows = self.db.execute(
            "SELECT model, version, commit_id, source, run, logged_model, tags, description, "
            "created, updated FROM model_versions WHERE model = ? AND deleted = 0 "
            "ORDER BY version",
            (model,),
        )
        return [_version(row) for row in rows]

    def version(self, model: str, version: int) -> ModelVersion | None:
        for found in self.versions(model):
            if found.version == version:
                return found
        return None

    def next_version(self, model: str) -> int:
        (top,) = self.db.execute(
            "SELECT max(version) FROM model_versions WHERE model = ?", (model,)
        ).fetchone()
        return int(top or 0) + 1


def _version(row: tuple[Any, ...]) -> ModelVersion:
    model, version, commit, source, run, logged, tags, description, created, updated = row
    return ModelVersion(
        model, version, commit, source, run, logged, json.loads(tags), description, created,
        updated,
    )  # fmt: skip


class RegisteredModelsView(Projection[RegistryIndex]):
    name = "registered_models"
    tables = ("registered_models", "model_versions")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> RegistryIndex:
        return RegistryIndex(db)

    @handles("ModelRegistered")
    def registered(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute("DELETE FROM model_versions WHERE model = ?", (d["model"],))
        db.execute(
            "INSERT OR REPLACE INTO registered_models VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
            (d["model"], d["model"], d["description"], json.dumps(d["tags"]), event.time,
             event.time, event.seq),
        )  # fmt: skip

    @handles("ModelUnregistered")
    def unregistered(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE registered_models SET active = 0 WHERE model = ?", (event.data["model"],)
        )

    @handles("ModelRenamed")
    def renamed(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE registered_models SET name = ?, updated = ? WHERE model = ?",
            (event.data["name"], event.time, event.data["model"]),
        )

    @handles("ModelVersionCreated")
    def version_created(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (d["model"], d["version"], d["commit"], d["source"], d["run"], d["logged_model"],
             json.dumps(d["tags"]), d["description"], event.time, event.time),
        )  # fmt: skip
        db.execute(
            "UPDATE registered_models SET updated = ? WHERE model = ?", (event.time, d["model"])
        )

    @handles("ModelVersionDeleted")
    def version_deleted(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "UPDATE model_versions SET deleted = 1 WHERE model = ? AND version = ?",
            (event.data["model"], event.data["version"]),
        )

    @handles("ModelTagsSet", "ModelDescribed")
    def annotated(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        table, where, key = (
            ("registered_models", "model = ?", (d["model"],)) if d["version"] is None
            else ("model_versions", "model = ? AND version = ?", (d["model"], d["version"]))
        )  # fmt: skip
        if event.type == "ModelDescribed":
            db.execute(
                f"UPDATE {table} SET description = ?, updated = ? WHERE {where}",
                (d["description"], event.time, *key),
            )
            return
        row = db.execute(f"SELECT tags FROM {table} WHERE {where}", key).fetchone()
        if row is None:
            return
        tags = {**json.loads(row[0]), **d["tags"]}
        for name in d["deleted"]:
            tags.pop(name, None)
        db.execute(
            f"UPDATE {table} SET tags = ?, updated = ? WHERE {where}",
            (json.dumps(tags), event.time, *key),
        )
