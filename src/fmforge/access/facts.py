"""What the ledger says of resources beyond the policy: a dataset's declared attributes and
every resource's lineage, as the authorizer's facts (``Authorizer.set_facts``).

- ``DatasetTagged`` gives ``dataset/NAME`` its licence, ``pii_columns``, ``subject_id``,
  ``consent_purposes`` and ``pii_mode``;
- lineage edges (what a resource was made from), kept so that compliance follows them: a
  model commit ``model/M@C`` is made from the run that produced it (its provenance), its
  parents and the base it adapts; a branch or tag ``model/M/branch/B`` from the commit it
  points at (moved with it); a run ``run/ID`` from the dataset versions and base model it was
  given; a merged dataset version from the versions merged;
- ``SubjectForgotten`` flags the dataset versions, runs and model commits derived from the
  forgotten subject's data ``needs_unlearning``.

So a model trained from a non-commercial dataset refuses ``use`` for a commercial purpose as
the dataset does (``model/M/branch/main`` → ``model/M@C`` → ``run/R`` → ``dataset/yt@v1`` →
``dataset/yt``, whose licence excludes it), and so does anything made from it later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fmforge.access.resources import format_resource
from fmforge.errors import InvalidPolicy
from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_SCHEMA = """
CREATE TABLE access_facts (
    resource TEXT PRIMARY KEY, attributes TEXT, sources TEXT, seq INTEGER NOT NULL
);
CREATE INDEX access_facts_by_seq ON access_facts (seq);
"""
_COMMIT = 64  # hex digits of a commit id


def dataset_resource(ref: str) -> str:
    """``NAME`` or ``NAME@REF`` (as a run or a version names it) as a resource."""
    name, _, version = ref.partition("@")
    if version:
        return format_resource("dataset", name, version=version)
    return format_resource("dataset", name)


def model_resource(ref: str) -> str:
    """``NAME@COMMIT`` / ``NAME@BRANCH`` / ``NAME`` as a resource: a commit id names the
    commit, anything else the branch."""
    name, _, version = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if not version:
        return format_resource("model", name)
    if len(version) == _COMMIT and all(c in "0123456789abcdef" for c in version):
        return format_resource("model", name, commit=version)
    return format_resource("model", name, branch=version)


@dataclass(frozen=True, slots=True)
class Fact:
    resource: str
    attributes: dict[str, Any] | None
    sources: tuple[str, ...] | None
    seq: int


class Facts:
    """The query side of ``AccessFactsView``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def since(self, seq: int) -> list[Fact]:
        """Facts changed after ``seq``, oldest first."""
        rows = self.db.execute(
            "SELECT resource, attributes, sources, seq FROM access_facts WHERE seq > ? "
            "ORDER BY seq",
            (seq,),
        )
        return [_fact(row) for row in rows]

    def of(self, resource: str) -> Fact | None:
        row = self.db.execute(
            "SELECT resource, attributes, sources, seq FROM access_facts WHERE resource = ?",
            (resource,),
        ).fetchone()
        return _fact(row) if row else None

    def attributes(self, resource: str) -> dict[str, Any]:
        """The attributes recorded for exactly ``resource`` (``{}`` for none)."""
        found = self.of(resource)
        return dict(found.attributes or {}) if found else {}

    def derived_from(self, resources: set[str]) -> list[str]:
        """Every resource whose lineage reaches one of ``resources``, transitively."""
        edges: dict[str, list[str]] = {}
        for resource, sources in self.db.execute(
            "SELECT resource, sources FROM access_facts WHERE sources IS NOT NULL"
        ):
            for source in orjson.loads(sources):
                edges.setdefault(source, []).append(resource)
        found: list[str] = []
        seen = set(resources)
        frontier = list(resources)
        while frontier:
            following = []
            for item in frontier:
                for child in edges.get(item, ()):
                    if child not in seen:
                        seen.add(child)
                        found.append(child)
                        following.append(child)
            frontier = following
        return found


def _fact(row: tuple[Any, ...]) -> Fact:
    resource, attributes, sources, seq = row
    return Fact(
        resource,
        orjson.loads(attributes) if attributes is not None else None,
        tuple(orjson.loads(sources)) if sources is not None else None,
        seq,
    )


class AccessFactsView(Projection[Facts]):
    """Per resource, its recorded attributes and what it was made from (see the module
    docstring)."""

    name = "access_facts"
    tables = ("access_facts",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SCHEMA)

    def read(self, db: sqlite3.Connection) -> Facts:
        return Facts(db)

    # ---- writing ---------------------------------------------------------------------------

    def _attributes(
        self, db: sqlite3.Connection, resource: str, values: Mapping[str, Any], seq: int
    ) -> None:
        row = db.execute(
            "SELECT attributes FROM access_facts WHERE resource = ?", (resource,)
        ).fetchone()
        merged = dict(orjson.loads(row[0])) if row and row[0] else {}
        merged.update(values)
        text = orjson.dumps(merged, option=orjson.OPT_SORT_KEYS).decode()
        db.execute(
            "INSERT INTO access_facts VALUES (?, ?, NULL, ?) ON CONFLICT (resource) DO UPDATE "
            "SET attributes = excluded.attributes, seq = excluded.seq",
            (resource, text, seq),
        )

    def _sources(self, db: sqlite3.Connection, resource: str, sources: list[str], seq: int) -> None:
        text = orjson.dumps(list(dict.fromkeys(sources))).decode()
        db.execute(
            "INSERT INTO access_facts VALUES (?, NULL, ?, ?) ON CONFLICT (resource) DO UPDATE "
            "SET sources = excluded.sources, seq = excluded.seq",
            (resource, text, seq),
        )

    @handles("DatasetTagged")
    def tagged(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        values = {
            "licence": d["licence"], "pii_columns": d["pii"], "subject_id": d["subject_id"],
            "consent_purposes": d["consent"], "pii_mode": d["pii_mode"],
        }  # fmt: skip
        self._attributes(db, dataset_resource(d["dataset"]), values, event.seq)

    @handles("DatasetVersionCommitted")
    def dataset_version(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        refs = (
            d["transformation"].get("refs") if d["transformation"].get("kind") == "merge" else None
        )
        if refs:
            this = dataset_resource(f"{d['dataset']}@v{d['number']}")
            self._sources(db, this, [_safe(dataset_resource, r) for r in refs], event.seq)

    @handles("ModelCommitted")
    def committed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        model = d["model"]
        sources = [format_resource("model", model, commit=p) for p in d["parents"]]
        provenance = d.get("provenance") or {}
        if isinstance(provenance.get("run"), str):
            sources.append(_safe(lambda r: format_resource("run", r), provenance["run"]))
        for key in ("base",):
            for value in (d.get(key), provenance.get(key)):
                if isinstance(value, str) and value:
                    sources.append(_safe(model_resource, value))
        commit = format_resource("model", model, commit=d["commit"])
        self._sources(db, commit, [s for s in sources if s], event.seq)
        branch = format_resource("model", model, branch=d["branch"])
        self._sources(db, branch, [commit], event.seq)

    @handles("BranchCreated", "BranchMoved")
    def moved(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        branch = format_resource("model", d["model"], branch=d["branch"])
        commit = format_resource("model", d["model"], commit=d["commit"])
        self._sources(db, branch, [commit], event.seq)

    @handles("BranchDeleted")
    def deleted(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        self._sources(db, format_resource("model", d["model"], branch=d["branch"]), [], event.seq)

    @handles("TagCreated")
    def tag_created(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        tag = format_resource("model", d["model"], tag=d["tag"])
        self._sources(db, tag, [format_resource("model", d["model"], commit=d["commit"])],
                      event.seq)  # fmt: skip

    @handles("RunStarted")
    def run_started(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        sources = [_safe(dataset_resource, ref) for ref in d["datasets"]]
        if d.get("base_model"):
            sources.append(_safe(model_resource, d["base_model"]))
        run = _safe(lambda r: format_resource("run", r), d["run"])
        if run:
            self._sources(db, run, [s for s in sources if s], event.seq)

    @handles("SubjectForgotten")
    def forgotten(self, db: sqlite3.Connection, event: Event) -> None:
        for resource in event.data.get("flagged") or ():
            self._attributes(db, resource, {"needs_unlearning": True}, event.seq)


def _safe(convert: Any, value: str) -> str:
    """``convert(value)``, or '' for a name the resource grammar cannot hold (such an edge is
    left out rather than failing the projection)."""
    try:
        return str(convert(value))
    except InvalidPolicy:
        return ""
