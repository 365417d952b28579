"""Projections: read models derived from the ledger, rebuilt from it at will.

A projection owns some tables in a local SQLite views database (``.fmforge/views.db``) and declares
a handler per event type with ``@handles``. The runner applies events in batches; each batch's table
writes and the projection's checkpoint commit in one SQLite transaction, so every event is applied
exactly once, whatever crashes. Read models are caches of the ledger, so they live beside any ledger
backend, PostgreSQL included, and ``rebuild()`` replays from seq 1 to the same tables.
"""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fmforge.errors import ProjectionError
from fmforge.ledger.events import Event
from fmforge.ledger.store import EventStore

logger = logging.getLogger(__name__)

Handler = Callable[[Any, sqlite3.Connection, Event], None]
F = TypeVar("F", bound=Callable[..., None])

_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL
)
"""


def handles(*event_types: str) -> Callable[[F], F]:
    """Mark a projection method as the handler of ``event_types``."""

    def mark(method: F) -> F:
        method._fmforge_handles = event_types  # type: ignore[attr-defined]
        return method

    return mark


class Projection(ABC):
    """Subclass with ``name``, ``tables``, ``create_tables`` and ``@handles`` methods.

    Bump ``version`` when the handlers or tables change: the runner then rebuilds it.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ()
    handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for event_type in getattr(value, "_fmforge_handles", ()):
                    found[event_type] = attr
        cls.handlers = found

    @abstractmethod
    def create_tables(self, db: sqlite3.Connection) -> None:
        """Create this projection's tables (inside the runner's transaction: use ``execute``;
        ``executescript`` would commit it)."""


class ProjectionRunner:
    """Keeps projections up to date with a ledger, in a SQLite views database."""

    def __init__(self, store: EventStore, path: str | Path) -> None:
        self.store = store
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_CHECKPOINTS)

    def position(self, projection: Projection) -> int:
        """The last seq the projection has taken into account (0: nothing yet)."""
        row = self.db.execute(
            "SELECT version, position FROM projection_checkpoints WHERE name = ?",
            (projection.name,),
        ).fetchone()
        return int(row[1]) if row and row[0] == projection.version else 0

    def _ensure_setup(self, projection: Projection) -> int:
        row = self.db.execute(
            "SELECT version, position FROM projection_checkpoints WHERE name = ?",
            (projection.name,),
        ).fetchone()
        if row is not None and row[0] == projection.version:
            return int(row[1])
        if row is not None:
            logger.info("projection %s changed version; rebuilding", projection.name)
        self._reset(projection)
        return 0

    def _reset(self, projection: Projection) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table in projection.tables:
                self.db.execute(f'DROP TABLE IF EXISTS "{table}"')
            projection.create_tables(self.db)
            self.db.execute(
                "INSERT OR REPLACE INTO projection_checkpoints (name, version, position) "
                "VALUES (?, ?, 0)",
                (projection.name, projection.version),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def run(self, projection: Projection, *, batch_size: int = 1000) -> int:
        """Apply every event recorded since the checkpoint; return how many were applied."""
        position = self._ensure_setup(projection)
        head = self.store.head().seq
        types = tuple(projection.handlers)
        applied = 0
        while position < head:
            upto = min(head, position + batch_size)
            events = list(self.store.read_all(position + 1, to_seq=upto, types=types))
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    getattr(projection, projection.handlers[event.type])(self.db, event)
            except Exception as exc:
                self.db.execute("ROLLBACK")
                raise ProjectionError(projection.name, event.seq, exc, event.type) from exc
            self.db.execute(
                "UPDATE projection_checkpoints SET position = ? WHERE name = ?",
                (upto, projection.name),
            )
            self.db.execute("COMMIT")
            applied += len(events)
            position = upto
        return applied

    def rebuild(self, projection: Projection) -> int:
        """Drop the projection's tables and replay the whole ledger into them."""
        self._reset(projection)
        return self.run(projection)

    def close(self) -> None:
        self.db.close()
