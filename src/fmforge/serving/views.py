"""Deployments as a projection: each deployment's replicas, what they hold, and its pins.

``repo.view(DeploymentsView)`` gives a ``DeploymentIndex``. A replica is running from its
``DeploymentStarted`` until its ``DeploymentStopped`` (one that died without stopping stays
"running": its last event tells when it was last heard of). Residency is what the replicas
recorded with ``AdapterLoaded`` / ``AdapterEvicted`` (host and disk tiers). A pin
(``DeploymentRolledBack``) holds until the branch it pins moves again (``BranchMoved``, a new
version pushed to it), so a rollback never outlives the fix that follows it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fmforge.errors import DeploymentNotFound
from fmforge.hints import did_you_mean
from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_SCHEMA = """
CREATE TABLE deployment_replicas (
    deployment TEXT NOT NULL, replica TEXT NOT NULL, base TEXT NOT NULL,
    base_commit TEXT NOT NULL, adapters TEXT NOT NULL, config TEXT NOT NULL,
    started TEXT NOT NULL, stopped TEXT, requests INTEGER, generated_tokens INTEGER,
    last_seen TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (deployment, replica)
);
CREATE TABLE deployment_residency (
    deployment TEXT NOT NULL, replica TEXT NOT NULL, content TEXT NOT NULL, tier TEXT NOT NULL,
    adapter TEXT NOT NULL, ms REAL NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (deployment, replica, content, tier)
);
CREATE TABLE deployment_pins (
    deployment TEXT NOT NULL, model TEXT NOT NULL, ref TEXT NOT NULL, commit_id TEXT NOT NULL,
    previous TEXT, seq INTEGER NOT NULL, PRIMARY KEY (deployment, model, ref)
);
"""


@dataclass(frozen=True, slots=True)
class Replica:
    deployment: str
    replica: str
    base: str
    base_commit: str
    adapters: list[dict[str, str]]
    config: dict[str, Any]
    started: str
    stopped: str | None
    requests: int | None
    generated_tokens: int | None
    last_seen: str

    @property
    def running(self) -> bool:
        return self.stopped is None


@dataclass(frozen=True, slots=True)
class Pin:
    deployment: str
    model: str
    ref: str
    commit: str
    previous: str | None
    seq: int


class DeploymentsView(Projection["DeploymentIndex"]):
    name = "deployments"
    tables = ("deployment_replicas", "deployment_residency", "deployment_pins")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> DeploymentIndex:
        return DeploymentIndex(db)

    @handles("DeploymentStarted")
    def started(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO deployment_replicas VALUES "
            "(?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
            (
                d["deployment"], d["replica"], d["base"], d["base_commit"],
                json.dumps(d["adapters"]), json.dumps(d["config"], sort_keys=True),
                event.time, event.time, event.seq,
            ),
        )  # fmt: skip
        db.execute(
            "DELETE FROM deployment_residency WHERE deployment = ? AND replica = ?",
            (d["deployment"], d["replica"]),
        )

    @handles("DeploymentStopped")
    def stopped(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "UPDATE deployment_replicas SET stopped = ?, requests = ?, generated_tokens = ?, "
            "last_seen = ? WHERE deployment = ? AND replica = ?",
            (event.time, d["requests"], d["generated_tokens"], event.time, d["deployment"],
             d["replica"]),
        )  # fmt: skip
        db.execute(
            "DELETE FROM deployment_residency WHERE deployment = ? AND replica = ?",
            (d["deployment"], d["replica"]),
        )

    @handles("AdapterLoaded")
    def loaded(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO deployment_residency VALUES (?, ?, ?, ?, ?, ?, ?)",
            (d["deployment"], d["replica"], d["content"], d["tier"], d["adapter"], d["ms"],
             d["bytes"]),
        )  # fmt: skip
        self._seen(db, d, event)

    @handles("AdapterEvicted")
    def evicted(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "DELETE FROM deployment_residency WHERE deployment = ? AND replica = ? AND "
            "content = ? AND tier = ?",
            (d["deployment"], d["replica"], d["content"], d["tier"]),
        )
        self._seen(db, d, event)

    @handles("DeploymentRolledBack")
    def rolled_back(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO deployment_pins VALUES (?, ?, ?, ?, ?, ?)",
            (d["deployment"], d["model"], d["ref"], d["commit"], d["previous"], event.seq),
        )

    @handles("BranchMoved", "BranchDeleted")
    def branch_moved(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "DELETE FROM deployment_pins WHERE model = ? AND ref = ? AND seq < ?",
            (d["model"], d["branch"], event.seq),
        )

    @staticmethod
    def _seen(db: sqlite3.Connection, d: dict[str, Any], event: Event) -> None:
        db.execute(
            "UPDATE deployment_replicas SET last_seen = ? WHERE deployment = ? AND replica = ?",
            (event.time, d["deployment"], d["replica"]),
        )


class DeploymentIndex:
    """Read-side queries over the ``DeploymentsView`` tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def names(self) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT deployment FROM deployment_replicas ORDER BY deployment"
        )
        return [r[0] for r in rows]

    def check(self, deployment: str) -> None:
        """Raise ``DeploymentNotFound`` (with the closest names) unless it was ever started."""
        names = self.names()
        if deployment not in names:
            hint = did_you_mean(deployment, names)
            raise DeploymentNotFound(
                f"no deployment named {deployment!r}{hint} (see `fmforge deployment ls`)"
            )

    def replicas(self, deployment: str) -> list[Replica]:
        rows = self.db.execute(
            "SELECT deployment, replica, base, base_commit, adapters, config, started, stopped, "
            "requests, generated_tokens, last_seen FROM deployment_replicas "
            "WHERE deployment = ? ORDER BY seq",
            (deployment,),
        )
        return [
            Replica(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), *r[6:])
            for r in rows
        ]

    def residency(self, deployment: str) -> list[tuple[str, str, str, str]]:
        """(replica, adapter, content, tier) of what the running replicas hold."""
        rows = self.db.execute(
            "SELECT replica, adapter, content, tier FROM deployment_residency "
            "WHERE deployment = ? ORDER BY replica, adapter, tier",
            (deployment,),
        )
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def pins(self, deployment: str) -> dict[tuple[str, str], Pin]:
        rows = self.db.execute(
            "SELECT deployment, model, ref, commit_id, previous, seq FROM deployment_pins "
            "WHERE deployment = ?",
            (deployment,),
        )
        return {(r[1], r[2]): Pin(*r) for r in rows}
