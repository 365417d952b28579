"""The serving domain's events, on streams ``deployment/<name>``.

A deployment is a name several ``fmforge serve`` replicas share. Each replica records
``DeploymentStarted`` (base, adapters, config) when it starts and ``DeploymentStopped`` when it
ends; an adapter entering or leaving a replica's host memory or local disk is
``AdapterLoaded`` / ``AdapterEvicted`` with the tier and milliseconds (batched, never one event
per request: device-slot swaps are metrics only). ``DeploymentRolledBack`` pins what an
adapter reference serves in the deployment to an earlier commit, until that branch moves again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventType

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Tier = Annotated[str, StringConstraints(pattern=r"^(device|host|disk)$")]
Source = Annotated[str, StringConstraints(pattern=r"^(registry|disk|host)$")]
Count = Annotated[int, Ge(0)]
Millis = Annotated[float, Ge(0)]


class ServedAdapter(TypedDict):
    ref: Ref  # NAME@REF as given
    commit: Digest  # what it resolved to when the replica started


class DeploymentStartedData(TypedDict):
    deployment: Name
    replica: Name
    base: Ref  # NAME@REF as given
    base_commit: Digest
    adapters: list[ServedAdapter]
    config: dict[str, Any]  # the resolved serving config (budgets, batch, queue limits, device)


class DeploymentStoppedData(TypedDict):
    deployment: Name
    replica: Name
    requests: Count
    generated_tokens: Count
    reason: str


class AdapterLoadedData(TypedDict):
    deployment: Name
    replica: Name
    adapter: Ref  # NAME@COMMIT
    content: Digest  # the content hash every cache is keyed by
    tier: Tier
    source: Source
    ms: Millis
    bytes: Count


class AdapterEvictedData(TypedDict):
    deployment: Name
    replica: Name
    adapter: Ref
    content: Digest
    tier: Tier
    reason: str


class DeploymentRolledBackData(TypedDict):
    deployment: Name
    model: Name
    ref: Name  # the reference whose answers are pinned (a branch such as ``live``)
    commit: Digest  # what it serves from now on in this deployment
    previous: Digest | None  # what it resolved to before
    to: Ref  # the REF given for the rollback, as typed
    note: NotRequired[str]


def _same_deployment(stream: str, data: Mapping[str, Any]) -> str | None:
    name = stream.removeprefix("deployment/")
    if data["deployment"] != name:
        return f"names deployment {data['deployment']!r}, but the stream is {name!r}"
    return None


DeploymentStarted = EventType("DeploymentStarted", DeploymentStartedData)
DeploymentStopped = EventType("DeploymentStopped", DeploymentStoppedData)
AdapterLoaded = EventType("AdapterLoaded", AdapterLoadedData)
AdapterEvicted = EventType("AdapterEvicted", AdapterEvictedData)
DeploymentRolledBack = EventType("DeploymentRolledBack", DeploymentRolledBackData)

DOMAIN = Domain(
    "serving",
    streams=("deployment/",),
    types=(
        DeploymentStarted,
        DeploymentStopped,
        AdapterLoaded,
        AdapterEvicted,
        DeploymentRolledBack,
    ),
    writer="`fmforge serve` and `fmforge deployment rollback`",
    check=_same_deployment,
)
