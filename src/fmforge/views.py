"""Every read model of the repository, listed once: what ``verify`` rebuilds and compares, and
what ``verify --rebuild-views`` repairs. The repository's own projection lives here too."""

from __future__ import annotations

import sqlite3
from typing import Any

from fmforge.data.views import DatasetsView, DatasetWork
from fmforge.ledger import Event, Projection, handles
from fmforge.models.refs import ModelRefs
from fmforge.tracking.views import ExperimentsView, RunsView


class PrunedObjects(Projection[set[str]]):
    """Objects deleted on purpose (``ObjectsPruned``: gc, forgetting), so ``verify`` and
    readers tell them from missing ones."""

    name = "pruned_objects"
    tables = ("pruned_objects",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE pruned_objects (digest TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    def read(self, db: sqlite3.Connection) -> set[str]:
        return {r[0] for r in db.execute("SELECT digest FROM pruned_objects")}

    @handles("ObjectsPruned")
    def pruned(self, db: sqlite3.Connection, event: Event) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO pruned_objects VALUES (?, ?)",
            [(digest, event.seq) for digest in event.data["objects"]],
        )


VIEWS: tuple[type[Projection[Any]], ...] = (
    PrunedObjects,
    ModelRefs,
    DatasetsView,
    DatasetWork,
    RunsView,
    ExperimentsView,
)
"""Every projection, in the order verify rebuilds them."""
