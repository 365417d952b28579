"""Diagonal Fishers recorded on model commits, as a projection: every ``FisherComputed``.

``fmforge fisher`` (``fmforge.training.fisher``) stores a commit's diagonal Fisher on a dataset
version as a safetensors object and records ``FisherComputed`` on the model's stream; this read
model answers "the newest Fisher of this commit" (what Fisher-weighted merging and FishMask
read, so neither needs the data again) and "the newest on this data", and tells gc which
objects a retained commit's Fishers need. Reached as ``repo.view(ModelFishers)``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from fmforge.ledger import Event, Projection, handles


@dataclass(frozen=True, slots=True)
class FisherRecord:
    """A recorded diagonal Fisher: a safetensors object with the model's tensor names."""

    model: str
    commit: str
    object: str
    dataset: str  # NAME@vN, and ``:split`` when one split was used
    dataset_version: str
    examples: int
    task: str | None
    kind: str | None  # empirical | true
    seed: int | None
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "commit": self.commit, "object": self.object,
            "dataset": self.dataset, "dataset_version": self.dataset_version,
            "examples": self.examples, "task": self.task, "kind": self.kind, "seed": self.seed,
        }  # fmt: skip


_COLUMNS = "model, commit_id, object, dataset, dataset_version, examples, task, kind, seed, seq"


class FisherIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def fisher(self, commit: str) -> FisherRecord | None:
        """The newest Fisher recorded for ``commit`` (a full commit id), or None."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM model_fishers WHERE commit_id = ? ORDER BY seq DESC LIMIT 1",
            (commit,),
        ).fetchone()
        return None if row is None else FisherRecord(*row)

    def matching(
        self, commit: str, dataset_version: str, dataset: str, task: str, kind: str, seed: int
    ) -> FisherRecord | None:
        """The newest Fisher of ``commit`` measured exactly so (same data version and split,
        task, kind and seed), or None."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM model_fishers WHERE commit_id = ? AND dataset_version = ? "
            "AND dataset = ? AND task IS ? AND kind IS ? AND seed IS ? ORDER BY seq DESC LIMIT 1",
            (commit, dataset_version, dataset, task, kind, seed),
        ).fetchone()
        return None if row is None else FisherRecord(*row)

    def of_commit(self, commit: str) -> list[FisherRecord]:
        """Every Fisher of ``commit``, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM model_fishers WHERE commit_id = ? ORDER BY seq", (commit,)
        )
        return [FisherRecord(*row) for row in rows]

    def objects_of(self, commits: set[str]) -> set[str]:
        """The Fisher objects recorded for any of ``commits`` (what gc keeps with them)."""
        rows = self.db.execute("SELECT commit_id, object FROM model_fishers")
        return {obj for commit, obj in rows if commit in commits}


class ModelFishers(Projection[FisherIndex]):
    name = "model_fishers"
    tables = ("model_fishers",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE model_fishers (seq INTEGER PRIMARY KEY, model TEXT NOT NULL, "
            "commit_id TEXT NOT NULL, object TEXT NOT NULL, dataset TEXT NOT NULL, "
            "dataset_version TEXT NOT NULL, examples INTEGER NOT NULL, task TEXT, kind TEXT, "
            "seed INTEGER)"
        )
        db.execute("CREATE INDEX model_fishers_by_commit ON model_fishers (commit_id, seq)")

    def read(self, db: sqlite3.Connection) -> FisherIndex:
        return FisherIndex(db)

    @handles("FisherComputed")
    def computed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR IGNORE INTO model_fishers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq, d["model"], d["commit"], d["object"], d["dataset"],
                d["dataset_version"], d["examples"], d.get("task"), d.get("kind"),
                d.get("seed"),
            ),
        )  # fmt: skip
