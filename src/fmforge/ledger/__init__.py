"""The append-only, hash-chained event ledger."""

from __future__ import annotations

from pathlib import Path as _Path

from fmforge.errors import ConfigError as _ConfigError
from fmforge.ledger.events import GENESIS_HASH, Event, NewEvent, new_event_id
from fmforge.ledger.projections import Projection, ProjectionRunner, handles
from fmforge.ledger.records import AppendResult, Head
from fmforge.ledger.registry import Domain, EventRegistry, EventType
from fmforge.ledger.store import EventStore
from fmforge.ledger.subscriptions import Subscription
from fmforge.ledger.upcasting import UpcasterRegistry


def open_event_store(
    url: str,
    *,
    busy_timeout: float = 30.0,
    upcasters: UpcasterRegistry | None = None,
    actor: str | None = None,
    registry: EventRegistry | None = None,
) -> EventStore:
    """Open a ledger from a URL: ``sqlite:///path``, a file path, or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from fmforge.ledger.postgres import PostgresEventStore

        return PostgresEventStore(
            url, busy_timeout=busy_timeout, upcasters=upcasters, actor=actor, registry=registry
        )
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        path = path if path.startswith("/") else "/" + path
    elif "://" in url:
        raise _ConfigError(
            f"unsupported ledger URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    else:
        path = url
    from fmforge.ledger.sqlite import SqliteEventStore

    if not _Path(path).parent.is_dir():
        raise _ConfigError(f"ledger directory {_Path(path).parent} does not exist")
    return SqliteEventStore(
        path, busy_timeout=busy_timeout, upcasters=upcasters, actor=actor, registry=registry
    )


__all__ = [
    "GENESIS_HASH",
    "AppendResult",
    "Domain",
    "Event",
    "EventRegistry",
    "EventStore",
    "EventType",
    "Head",
    "NewEvent",
    "Projection",
    "ProjectionRunner",
    "Subscription",
    "UpcasterRegistry",
    "handles",
    "new_event_id",
    "open_event_store",
]
