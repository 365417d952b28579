"""Every event type fmforge records, one registry: the repository's own, then each domain's.

Domains are listed here explicitly (no registration by import side effect). See
``fmforge.ledger.registry`` for what the registry enforces.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.access import events as access_events
from fmforge.data import events as data_events
from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventRegistry, EventType
from fmforge.models import events as model_events
from fmforge.serving import events as serving_events
from fmforge.tracking import events as tracking_events
from fmforge.training import events as training_events

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]


class RepositoryInitializedData(TypedDict):
    ledger: str
    objects: str


class ObjectsPrunedData(TypedDict):
    objects: list[Digest]
    reason: str


RepositoryInitialized = EventType("RepositoryInitialized", RepositoryInitializedData)
ObjectsPruned = EventType("ObjectsPruned", ObjectsPrunedData)

REPOSITORY = Domain(
    "repository",
    streams=("repository", "objects/"),
    types=(RepositoryInitialized, ObjectsPruned),
    writer="`fmforge init`, `fmforge gc` and `fmforge data forget`",
)

REGISTRY = EventRegistry(
    [
        REPOSITORY,
        model_events.DOMAIN,
        data_events.DOMAIN,
        tracking_events.DOMAIN,
        access_events.DOMAIN,
        training_events.DOMAIN,
        serving_events.DOMAIN,
    ]
)
"""What ``Repository`` validates every write against."""
