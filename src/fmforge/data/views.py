"""The dataset domain's read models: versions, and the work recorded on them.

``repo.view(DatasetsView)`` gives a ``DatasetIndex`` (every version of every dataset, by name
and number); ``repo.view(DatasetWork)`` gives a ``WorkIndex``: cleaning verdicts, label-issue
queues and their verdicts, label matrices (which LF version's column is stored where),
manual labels and forgotten rows; ``repo.view(SynthWork)`` gives a ``SynthIndex``: the
synthesized LFs proposed and the reviewers' verdicts, and where each dataset's cached
embeddings are. Domain modules ask these, never the streams.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fmforge.ledger import Event, Projection, handles
from fmforge.ledger.projections import create_statements

_VERSIONS = """
CREATE TABLE dataset_versions (
    version_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, number INTEGER NOT NULL,
    parents TEXT NOT NULL, manifest TEXT NOT NULL, rows INTEGER NOT NULL, columns TEXT NOT NULL,
    transformation TEXT NOT NULL, message TEXT NOT NULL, actor TEXT NOT NULL, time TEXT NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (dataset, number)
)
"""


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    number: int
    id: str
    parents: tuple[str, ...]
    manifest: str
    rows: int
    columns: list[dict[str, str]]
    transformation: dict[str, Any]
    message: str
    actor: str = ""
    time: str = ""
    seq: int = 0

    @property
    def ref(self) -> str:
        return f"{self.dataset}@v{self.number}"


def _version(row: tuple[Any, ...]) -> DatasetVersion:
    (vid, dataset, number, parents, manifest, rows, columns, transformation, message, actor,
     when, seq) = row  # fmt: skip
    return DatasetVersion(
        dataset, number, vid, tuple(json.loads(parents)), manifest, rows, json.loads(columns),
        json.loads(transformation), message, actor, when, seq,
    )  # fmt: skip


class DatasetIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def versions(self, dataset: str) -> list[DatasetVersion]:
        """Every version of ``dataset``, newest first (empty if there is none)."""
        rows = self.db.execute(
            "SELECT * FROM dataset_versions WHERE dataset = ? ORDER BY number DESC", (dataset,)
        )
        return [_version(r) for r in rows]

    def by_id(self, version_id: str) -> DatasetVersion | None:
        """The version with this id, if any."""
        row = self.db.execute(
            "SELECT * FROM dataset_versions WHERE version_id = ?", (version_id,)
        ).fetchone()
        return None if row is None else _version(row)

    def newest(self) -> list[DatasetVersion]:
        """The newest version of every dataset, by name."""
        rows = self.db.execute(
            "SELECT * FROM dataset_versions v WHERE number = "
            "(SELECT max(number) FROM dataset_versions WHERE dataset = v.dataset) ORDER BY dataset"
        )
        return [_version(r) for r in rows]

    def all_versions(self) -> list[DatasetVersion]:
        """Every version of every dataset, in recording order."""
        return [_version(r) for r in self.db.execute("SELECT * FROM dataset_versions ORDER BY seq")]


class DatasetsView(Projection[DatasetIndex]):
    name = "datasets"
    version = 2
    tables = ("dataset_versions",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(_VERSIONS)

    def read(self, db: sqlite3.Connection) -> DatasetIndex:
        return DatasetIndex(db)

    @handles("DatasetVersionCommitted")
    def committed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR IGNORE INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d["version"], d["dataset"], d["number"], json.dumps(d["parents"]), d["manifest"],
                d["rows"], json.dumps(d["columns"]), json.dumps(d["transformation"]),
                d["message"], str(event.meta.get("actor", "")), event.time, event.seq,
            ),
        )  # fmt: skip


_WORK = """
CREATE TABLE cleaning_verdicts (
    dataset TEXT NOT NULL, row_id TEXT NOT NULL, rule_key TEXT NOT NULL, verdict TEXT NOT NULL,
    reviewer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (dataset, row_id, rule_key)
);
CREATE TABLE label_issue_queues (dataset TEXT PRIMARY KEY, data TEXT NOT NULL, seq INTEGER);
CREATE TABLE label_issue_verdicts (
    dataset TEXT NOT NULL, row_id TEXT NOT NULL, verdict TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY (dataset, row_id)
);
CREATE TABLE label_matrices (
    dataset TEXT NOT NULL, version TEXT NOT NULL, seq INTEGER NOT NULL, lfs TEXT NOT NULL,
    PRIMARY KEY (dataset, seq)
);
CREATE TABLE manual_labels (
    dataset TEXT NOT NULL, row_id TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY (dataset, row_id)
);
CREATE TABLE rows_forgotten (seq INTEGER PRIMARY KEY, dataset TEXT NOT NULL, data TEXT NOT NULL)
"""


def rule_key(rule: dict[str, Any]) -> str:
    """What a verdict is about: the rule's kind. Overriding "dedup dropped this row" keeps the
    row from every dedup rule (exact or normalized), not only the one the reviewer saw."""
    (kind,) = rule
    return str(kind)


class WorkIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def cleaning_verdicts(self, dataset: str) -> dict[tuple[str, str], tuple[str, str]]:
        """(row id, rule key) -> (standing verdict, reviewer)."""
        rows = self.db.execute(
            "SELECT row_id, rule_key, verdict, reviewer FROM cleaning_verdicts WHERE dataset = ?",
            (dataset,),
        )
        return {(r, k): (v, who) for r, k, v, who in rows}

    def label_issue_queue(self, dataset: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT data FROM label_issue_queues WHERE dataset = ?", (dataset,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def label_issue_verdicts(self, dataset: str) -> dict[str, tuple[str, Any]]:
        rows = self.db.execute(
            "SELECT row_id, verdict, label FROM label_issue_verdicts WHERE dataset = ?",
            (dataset,),
        )
        return {r: (v, json.loads(label)) for r, v, label in rows}

    def label_matrices(self, dataset: str, version: str) -> list[list[dict[str, str]]]:
        """The LFs (name, kind, version, column) of each matrix built over ``version``, oldest
        first."""
        rows = self.db.execute(
            "SELECT lfs FROM label_matrices WHERE dataset = ? AND version = ? ORDER BY seq",
            (dataset, version),
        )
        return [json.loads(r[0]) for r in rows]

    def manual_labels(self, dataset: str) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT row_id, label FROM manual_labels WHERE dataset = ?", (dataset,)
        )
        return {r: json.loads(label) for r, label in rows}

    def rows_forgotten(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT data FROM rows_forgotten")]


class DatasetWork(Projection[WorkIndex]):
    name = "dataset_work"
    tables = (
        "cleaning_verdicts", "label_issue_queues", "label_issue_verdicts", "label_matrices",
        "manual_labels", "rows_forgotten",
    )  # fmt: skip

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _WORK)

    def read(self, db: sqlite3.Connection) -> WorkIndex:
        return WorkIndex(db)

    @staticmethod
    def _dataset(event: Event) -> str:
        return event.stream.removeprefix("dataset/")

    @handles("CleaningReviewed")
    def reviewed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO cleaning_verdicts VALUES (?, ?, ?, ?, ?, ?)",
            (self._dataset(event), d["row_id"], rule_key(d["rule"]), d["verdict"],
             d["reviewer"], event.seq),
        )  # fmt: skip

    @handles("LabelIssuesFound")
    def issues(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "INSERT OR REPLACE INTO label_issue_queues VALUES (?, ?, ?)",
            (self._dataset(event), json.dumps(event.data), event.seq),
        )

    @handles("LabelIssueReviewed")
    def issue_reviewed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO label_issue_verdicts VALUES (?, ?, ?, ?)",
            (self._dataset(event), d["row_id"], d["verdict"], json.dumps(d["label"])),
        )

    @handles("LabelMatrixBuilt")
    def matrix(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO label_matrices VALUES (?, ?, ?, ?)",
            (self._dataset(event), d["version"], event.seq, json.dumps(d["lfs"])),
        )

    @handles("ManualLabelSet")
    def manual(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR REPLACE INTO manual_labels VALUES (?, ?, ?)",
            (self._dataset(event), d["row_id"], json.dumps(d["label"])),
        )

    @handles("RowsForgotten")
    def forgotten(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "INSERT INTO rows_forgotten VALUES (?, ?, ?)",
            (event.seq, self._dataset(event), json.dumps(event.data)),
        )


_SYNTH = """
CREATE TABLE lf_proposals (
    proposal TEXT PRIMARY KEY, dataset TEXT NOT NULL, version TEXT NOT NULL,
    intent TEXT NOT NULL, examples TEXT NOT NULL, seed INTEGER NOT NULL,
    generator TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, lf_version TEXT NOT NULL,
    labels TEXT NOT NULL, column_name TEXT NOT NULL, lf TEXT NOT NULL, scores TEXT NOT NULL,
    status TEXT NOT NULL, reviewer TEXT NOT NULL, note TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE INDEX lf_proposals_key ON lf_proposals (dataset, intent, examples);
CREATE TABLE embedding_objects (
    seq INTEGER PRIMARY KEY, dataset TEXT NOT NULL, model TEXT NOT NULL, object TEXT NOT NULL,
    what TEXT NOT NULL, texts INTEGER NOT NULL
);
CREATE INDEX embedding_objects_key ON embedding_objects (dataset, model)
"""


@dataclass(frozen=True)
class Proposal:
    """A synthesized LF as proposed, with the reviewers' standing verdict."""

    proposal: str
    dataset: str
    version: str
    intent: str
    examples: str
    seed: int
    generator: str
    name: str
    kind: str
    lf_version: str
    labels: list[str]
    column: str
    lf: dict[str, Any]
    scores: dict[str, float]
    status: str  # pending | accepted | rejected
    reviewer: str
    note: str
    seq: int


class SynthIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def proposals(self, dataset: str, status: str | None = None) -> list[Proposal]:
        """The LFs proposed for ``dataset`` (optionally only those with ``status``), in the
        order they were proposed."""
        query = "SELECT * FROM lf_proposals WHERE dataset = ?"
        args: tuple[Any, ...] = (dataset,)
        if status is not None:
            query, args = query + " AND status = ?", (*args, status)
        rows = self.db.execute(query + " ORDER BY seq, rowid", args)
        return [_proposal(r) for r in rows]

    def rejected(self, dataset: str, intent: str, examples: str) -> set[str]:
        """LF versions rejected for this intent and example set: never proposed again."""
        rows = self.db.execute(
            "SELECT lf_version FROM lf_proposals WHERE dataset = ? AND intent = ? "
            "AND examples = ? AND status = 'rejected'",
            (dataset, intent, examples),
        )
        return {r[0] for r in rows}

    def embedding_objects(self, dataset: str, model: str) -> list[str]:
        """Objects of cached embeddings of ``dataset``'s texts by ``model``, oldest first."""
        rows = self.db.execute(
            "SELECT object FROM embedding_objects WHERE dataset = ? AND model = ? ORDER BY seq",
            (dataset, model),
        )
        return [r[0] for r in rows]


def _proposal(row: tuple[Any, ...]) -> Proposal:
    (proposal, dataset, version, intent, examples, seed, generator, name, kind, lf_version,
     labels, column, lf, scores, status, reviewer, note, seq) = row  # fmt: skip
    return Proposal(
        proposal, dataset, version, intent, examples, seed, generator, name, kind, lf_version,
        json.loads(labels), column, json.loads(lf), json.loads(scores), status, reviewer, note,
        seq,
    )  # fmt: skip


class SynthWork(Projection[SynthIndex]):
    """Synthesized LFs and their reviews; where each dataset's cached embeddings are."""

    name = "label_synth"
    tables = ("lf_proposals", "embedding_objects")

    def create_tables(self, db: sqlite3.Connection) -> None:
        create_statements(db, _SYNTH)

    def read(self, db: sqlite3.Connection) -> SynthIndex:
        return SynthIndex(db)

    @handles("LabelingFunctionProposed")
    def proposed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT OR IGNORE INTO lf_proposals VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', '', '', ?)",
            (
                d["proposal"], event.stream.removeprefix("dataset/"), d["version"], d["intent"],
                d["examples"], d["seed"], d["generator"], str(d["lf"].get("name", "")),
                d["kind"], d["lf_version"], json.dumps(d["labels"]), d["column"],
                json.dumps(d["lf"], sort_keys=True), json.dumps(d["scores"], sort_keys=True),
                event.seq,
            ),
        )  # fmt: skip

    @handles("LabelingFunctionReviewed")
    def reviewed(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        status = "accepted" if d["verdict"] == "accept" else "rejected"
        db.execute(
            "UPDATE lf_proposals SET status = ?, reviewer = ?, note = ? WHERE proposal = ?",
            (status, d["reviewer"], d["note"], d["proposal"]),
        )

    @handles("EmbeddingsComputed")
    def embedded(self, db: sqlite3.Connection, event: Event) -> None:
        d = event.data
        db.execute(
            "INSERT INTO embedding_objects VALUES (?, ?, ?, ?, ?, ?)",
            (event.seq, event.stream.removeprefix("dataset/"), d["model"], d["object"],
             d["what"], d["texts"]),
        )  # fmt: skip
