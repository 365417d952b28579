"""Projections: read models derived from the ledger, rebuilt from it at will.

A projection owns some tables in a local SQLite views database (``.fmforge/views.db``), declares
a handler per event type with ``@handles``, and a ``read(db)`` giving its query side. Reached as
``repo.view(ModelRefs)``: the runner first applies every event recorded since the projection's
checkpoint, in batches; each batch's table writes and the checkpoint commit in one SQLite
transaction, so every event is applied exactly once, whatever crashes.

The checkpoint records the seq *and hash* of the last event applied. Before catching up, the
runner checks that hash against the ledger: a views database that belongs to another ledger (a
restored backup, a copied directory) is rebuilt instead of trusted. ``verify`` rebuilds every
projection into a scratch database and names each row that differs from ``views.db``
(projection, table, key): a read model edited by hand is found, and ``rebuild`` repairs it.

Any thread may ask for a view: catching up runs under the runner's lock (on its one writing
connection), and each thread reads through its own connection, which sees only committed
batches; so a slow read in one thread never blocks another, and a read never sees half a batch.

Read models are caches of the ledger, so they live beside any ledger backend, PostgreSQL
included. Only validated events reach a projection (see ``fmforge.ledger.registry``); a handler
that fails is a bug, reported as ``ProjectionError`` naming the projection, seq, type and cause,
and only that projection is affected.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from fmforge.errors import FmforgeError, ProjectionError
from fmforge.ledger.events import Event
from fmforge.ledger.store import EventStore

if TYPE_CHECKING:
    from fmforge.objects import ObjectStore

logger = logging.getLogger(__name__)

Handler = Callable[[Any, sqlite3.Connection, Event], None]
F = TypeVar("F", bound=Callable[..., None])
R = TypeVar("R")

VIEWS_FORMAT = 2  # PRAGMA user_version of views.db; another value rebuilds every projection
_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL,
    hash     BLOB
)
"""


def handles(*event_types: str) -> Callable[[F], F]:
    """Mark a projection method as the handler of ``event_types``."""

    def mark(method: F) -> F:
        method._fmforge_handles = event_types  # type: ignore[attr-defined]
        return method

    return mark


class Projection(ABC, Generic[R]):
    """Subclass with ``name``, ``tables``, ``create_tables``, ``@handles`` methods and
    ``read``. Bump ``version`` when the handlers or tables change: the runner then rebuilds it.

    ``objects`` is the repository's object store, set by the runner before any handler runs
    (for projections that index what an event's objects hold, such as a commit's manifest).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ()
    handlers: ClassVar[dict[str, str]] = {}
    objects: ObjectStore | None = None
    refs_only: ClassVar[bool] = False
    """Fed ``(seq, stream, refs)`` of every event that refers to objects (whatever its type,
    nothing decoded) through ``apply_refs``, instead of events through handlers."""

    def apply_refs(self, db: sqlite3.Connection, rows: list[tuple[int, str, str]]) -> None:
        """For ``refs_only`` projections."""
        raise NotImplementedError

    def dispatch(self, db: sqlite3.Connection, event: Event) -> None:
        """Apply one event with its handler; a failure names the event."""
        try:
            getattr(self, self.handlers[event.type])(db, event)
        except ProjectionError:
            raise
        except Exception as exc:
            raise ProjectionError(self.name, event.seq, exc, event.type) from exc

    def apply_batch(self, db: sqlite3.Connection, events: list[Event]) -> None:
        """Apply a batch of events in order (inside the runner's transaction). Override to
        merge work across events; the result must equal one ``dispatch`` per event."""
        for event in events:
            self.dispatch(db, event)

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

    @abstractmethod
    def read(self, db: sqlite3.Connection) -> R:
        """The query side over this projection's tables."""


def create_statements(db: sqlite3.Connection, schema: str) -> None:
    """Run each statement of ``schema`` (``executescript`` would commit the transaction)."""
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)


@dataclass(frozen=True, slots=True)
class ViewDifference:
    """A row of a read model that is not what rebuilding from the ledger gives."""

    projection: str
    table: str
    key: str
    kind: str  # "changed", "missing" (the rebuild has it, views.db not), "extra", "failed"

    def __str__(self) -> str:
        return f"{self.projection}: table {self.table}, {self.key}: {self.kind}"


class ProjectionRunner:
    """Keeps projections up to date with a ledger, in a SQLite views database."""

    def __init__(
        self, store: EventStore, path: str | Path, objects: ObjectStore | None = None
    ) -> None:
        self.store = store
        self.path = Path(path)
        self.objects = objects
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A cache of the ledger: a power cut may lose its last batches (they are applied again
        # from the checkpoint), never its consistency, so commits need not wait for fsync.
        self.db.execute("PRAGMA synchronous=NORMAL")
        (format_,) = self.db.execute("PRAGMA user_version").fetchone()
        if format_ != VIEWS_FORMAT:
            # Written by another fmforge: forget every checkpoint, so each projection rebuilds
            # (its tables are dropped and created again on first use).
            self.db.execute("DROP TABLE IF EXISTS projection_checkpoints")
            self.db.execute(f"PRAGMA user_version = {VIEWS_FORMAT}")
        self.db.execute(_CHECKPOINTS)
        self._instances: dict[type[Projection[Any]], Projection[Any]] = {}
        self._lock = threading.RLock()  # one catch-up at a time, on ``db``
        self._local = threading.local()  # each thread's reading connection
        self._readers: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []

    def projection(self, cls: type[Projection[R]]) -> Projection[R]:
        with self._lock:
            instance = self._instances.get(cls)
            if instance is None:
                instance = self._instances[cls] = cls()
                instance.objects = self.objects
            return instance

    def view(self, cls: type[Projection[R]]) -> R:
        """``cls``'s read side, after applying what the ledger recorded since its checkpoint;
        it reads through the calling thread's connection (use it in that thread)."""
        projection = self.projection(cls)
        self.run(projection)
        return projection.read(self._reader())

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:  # close the connections of threads that ended
                for thread, old in self._readers:
                    alive = thread()
                    if alive is None or not alive.is_alive():
                        old.close()
                self._readers = [(t, c) for t, c in self._readers if (a := t()) and a.is_alive()]
                self._readers.append((weakref.ref(threading.current_thread()), conn))
        return conn

    def position(self, projection: Projection[Any]) -> int:
        """The last seq the projection has taken into account (0: nothing yet)."""
        with self._lock:
            row = self.db.execute(
                "SELECT version, position FROM projection_checkpoints WHERE name = ?",
                (projection.name,),
            ).fetchone()
        return int(row[1]) if row and row[0] == projection.version else 0

    def _ensure_setup(self, projection: Projection[Any]) -> int:
        row = self.db.execute(
            "SELECT version, position, hash FROM projection_checkpoints WHERE name = ?",
            (projection.name,),
        ).fetchone()
        if row is not None and row[0] == projection.version:
            position, recorded = int(row[1]), row[2]
            if position == 0 or self.store.hash_at(position) == recorded:
                return position
            logger.warning(
                "projection %s was built from another ledger (seq %d differs); rebuilding",
                projection.name,
                position,
            )
        elif row is not None:
            logger.info("projection %s changed version; rebuilding", projection.name)
        self._reset(projection)
        return 0

    def _reset(self, projection: Projection[Any], db: sqlite3.Connection | None = None) -> None:
        db = db or self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in projection.tables:
                db.execute(f'DROP TABLE IF EXISTS "{table}"')
            projection.create_tables(db)
            db.execute(
                "INSERT OR REPLACE INTO projection_checkpoints (name, version, position, hash) "
                "VALUES (?, ?, 0, NULL)",
                (projection.name, projection.version),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def run(self, projection: Projection[Any], *, batch_size: int = 2000) -> int:
        """Apply every event recorded since the checkpoint; return how many were applied."""
        with self._lock:
            position = self._ensure_setup(projection)
            return self._apply(projection, self.db, position, batch_size)

    def _apply(
        self, projection: Projection[Any], db: sqlite3.Connection, position: int, batch_size: int
    ) -> int:
        head = self.store.head()
        types = tuple(projection.handlers)
        applied = 0
        while position < head.seq:
            upto = min(head.seq, position + batch_size)
            if projection.refs_only:
                rows = list(self.store.read_refs(position + 1, upto))
                db.execute("BEGIN IMMEDIATE")
                try:
                    projection.apply_refs(db, rows)
                except Exception as exc:
                    db.execute("ROLLBACK")
                    raise ProjectionError(projection.name, upto, exc, "refs") from exc
                events: list[Event] = []
            else:
                events = list(self.store.read_all(position + 1, to_seq=upto, types=types))
                db.execute("BEGIN IMMEDIATE")
                try:
                    projection.apply_batch(db, events)
                except ProjectionError:
                    db.execute("ROLLBACK")
                    raise
                except Exception as exc:
                    db.execute("ROLLBACK")
                    raise ProjectionError(projection.name, upto, exc, "a batch") from exc
            last_hash = head.hash if upto == head.seq else self.store.hash_at(upto)
            db.execute(
                "UPDATE projection_checkpoints SET position = ?, hash = ? WHERE name = ?",
                (upto, last_hash, projection.name),
            )
            db.execute("COMMIT")
            applied += len(events)
            position = upto
        return applied

    def rebuild(self, projection: Projection[Any]) -> int:
        """Drop the projection's tables and replay the whole ledger into them."""
        with self._lock:
            self._reset(projection)
            return self.run(projection)

    def verify(self, classes: Sequence[type[Projection[Any]]]) -> list[ViewDifference]:
        """Rebuild each projection into a scratch database and compare it with ``views.db``
        (brought up to date first): every row that differs, by projection, table and key."""
        found: list[ViewDifference] = []
        with self._lock, tempfile.TemporaryDirectory(prefix="fmforge-views-") as tmp:
            scratch = sqlite3.connect(Path(tmp) / "scratch.db", isolation_level=None)
            try:
                scratch.execute("PRAGMA journal_mode=OFF")
                scratch.execute("PRAGMA synchronous=OFF")
                scratch.execute(_CHECKPOINTS)
                for cls in classes:
                    found.extend(self._verify_one(self.projection(cls), scratch))
            finally:
                scratch.close()
        return found

    def _verify_one(
        self, projection: Projection[Any], scratch: sqlite3.Connection
    ) -> list[ViewDifference]:
        fresh = type(projection)()
        fresh.objects = self.objects
        self._reset(fresh, scratch)
        self._apply(fresh, scratch, 0, 20_000)
        try:
            self.run(projection)
        except FmforgeError as exc:
            return [ViewDifference(projection.name, "*", str(exc), "failed")]
        position = self.position(projection)
        rebuilt = scratch.execute(
            "SELECT position FROM projection_checkpoints WHERE name = ?", (projection.name,)
        ).fetchone()[0]
        if position != rebuilt:  # the ledger moved on in between: compare again later
            return [ViewDifference(projection.name, "*", f"seq {position} vs {rebuilt}", "moved")]
        scratch.commit()
        self.db.execute("ATTACH DATABASE ? AS scratch", (str(_db_path(scratch)),))
        try:
            return [
                d
                for table in projection.tables
                for d in _compare_table(self.db, projection.name, table)
            ]
        finally:
            self.db.execute("DETACH DATABASE scratch")

    def close(self) -> None:
        with self._lock:
            for _, conn in self._readers:
                conn.close()
            self._readers = []
            self._local = threading.local()
            self.db.close()


def _db_path(db: sqlite3.Connection) -> str:
    return str(db.execute("PRAGMA database_list").fetchone()[2])


def _compare_table(db: sqlite3.Connection, projection: str, table: str) -> list[ViewDifference]:
    info = db.execute(f'PRAGMA main.table_info("{table}")').fetchall()
    if not info:
        return [ViewDifference(projection, table, "the whole table", "missing")]
    columns = [row[1] for row in info]
    key_columns = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]] or columns
    key_of = [columns.index(c) for c in key_columns]
    quoted = ", ".join(f'"{c}"' for c in columns)
    live = db.execute(
        f'SELECT {quoted} FROM main."{table}" EXCEPT SELECT {quoted} FROM scratch."{table}"'
    ).fetchall()
    rebuilt = db.execute(
        f'SELECT {quoted} FROM scratch."{table}" EXCEPT SELECT {quoted} FROM main."{table}"'
    ).fetchall()

    def key(row: Iterable[Any]) -> str:
        values = list(row)
        return ", ".join(
            f"{c}={_short(values[i])}" for c, i in zip(key_columns, key_of, strict=True)
        )

    live_keys = {key(r) for r in live}
    rebuilt_keys = {key(r) for r in rebuilt}
    out = [
        ViewDifference(projection, table, k, "changed") for k in sorted(live_keys & rebuilt_keys)
    ]
    out += [ViewDifference(projection, table, k, "extra") for k in sorted(live_keys - rebuilt_keys)]
    out += [
        ViewDifference(projection, table, k, "missing") for k in sorted(rebuilt_keys - live_keys)
    ]
    return out


def _short(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
