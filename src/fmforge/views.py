"""Every read model of the repository, listed once: what ``verify`` rebuilds and compares, and
what ``verify --rebuild-views`` repairs. The repository's own projection lives here too."""

from __future__ import annotations

import sqlite3
from typing import Any

from fmforge.access.facts import AccessFactsView
from fmforge.access.views import AccessHistoryView, AccessLogView, AccessView, EndedSessions
from fmforge.data.views import DatasetsView, DatasetWork, SynthWork
from fmforge.ledger import Event, Projection, handles
from fmforge.models.evaluations import ModelEvaluations
from fmforge.models.fishers import ModelFishers
from fmforge.models.refs import ModelRefs
from fmforge.models.registered import RegisteredModelsView
from fmforge.serving.views import DeploymentsView
from fmforge.tracking.artifacts import ArtifactsView
from fmforge.tracking.experiments import ExperimentsView
from fmforge.tracking.logged_models import LoggedModelsView
from fmforge.tracking.views import RunsView


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


class ReferenceIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def all(self) -> set[str]:
        """Every object some event refers to."""
        return {r[0] for r in self.db.execute("SELECT digest FROM object_refs")}

    def outside_models(self) -> set[str]:
        """Objects some event outside the model registry refers to (a dataset, a run...):
        they stay whatever the model registry's gc decides."""
        rows = self.db.execute("SELECT digest FROM object_refs WHERE outside_models = 1")
        return {r[0] for r in rows}


class ObjectRefs(Projection[ReferenceIndex]):
    """Every object any event refers to (its ``refs``, whatever the event's type), with the
    first seq naming it: what gc keeps, answered without decoding the ledger."""

    name = "object_refs"
    tables = ("object_refs",)
    refs_only = True

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE object_refs (digest TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, "
            "outside_models INTEGER NOT NULL)"
        )

    def read(self, db: sqlite3.Connection) -> ReferenceIndex:
        return ReferenceIndex(db)

    def apply_refs(self, db: sqlite3.Connection, rows: list[tuple[int, str, str]]) -> None:
        db.executemany(
            "INSERT INTO object_refs VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
            "outside_models = max(outside_models, excluded.outside_models)",
            [
                (digest, seq, 0 if stream.startswith("model/") else 1)
                for seq, stream, refs in rows
                for digest in refs.split(",")
            ],
        )


VIEWS: tuple[type[Projection[Any]], ...] = (
    PrunedObjects,
    ObjectRefs,
    ModelRefs,
    ModelEvaluations,
    ModelFishers,
    DatasetsView,
    DatasetWork,
    SynthWork,
    RunsView,
    ExperimentsView,
    ArtifactsView,
    LoggedModelsView,
    RegisteredModelsView,
    AccessView,
    AccessLogView,
    AccessHistoryView,
    AccessFactsView,
    EndedSessions,
    DeploymentsView,
)
"""Every projection, in the order verify rebuilds them."""
