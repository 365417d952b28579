"""fmforge: engineer foundation models the way software is engineered.

Every fact is an event in a hash-chained ledger; large payloads live in a content-addressed
object store; every other view is a projection rebuilt from the ledger.
"""

from __future__ import annotations

from fmforge.errors import FmforgeError
from fmforge.ledger import (
    Event,
    EventStore,
    NewEvent,
    Projection,
    ProjectionRunner,
    handles,
    open_event_store,
)
from fmforge.objects import ObjectStore, open_object_store
from fmforge.repository import Repository

__version__ = "0.1.0"

__all__ = [
    "Event",
    "EventStore",
    "FmforgeError",
    "NewEvent",
    "ObjectStore",
    "Projection",
    "ProjectionRunner",
    "Repository",
    "__version__",
    "handles",
    "open_event_store",
    "open_object_store",
]
