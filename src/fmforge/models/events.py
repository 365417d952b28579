"""The model registry's events, on streams ``model/<name>``.

A commit and the branch move it causes are one append guarded by the stream version. Branches
move only by events: created, moved (a commit, reset, push, pull or a forced rewrite naming the
commits it drops), deleted. Tags are created once and never move.

MLflow's model registry is this registry: ``ModelRegistered`` makes a model a registered model
(its description and tags), each ``ModelVersionCreated`` numbers a commit as version N (what
was registered, from which run or logged model), ``ModelTagsSet``/``ModelDescribed`` annotate
the model or one version, ``ModelVersionDeleted``/``ModelUnregistered`` hide them from MLflow
clients (the commits stay), ``ModelRenamed`` gives the model another name for MLflow clients.
An alias (``champion``) is a branch ``alias/<name>``: it moves (``BranchMoved``) where tags
never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventType
from fmforge.models.names import check_model_name, check_ref_name

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MoveReason = Annotated[str, StringConstraints(pattern=r"^(commit|reset|push|pull|force)$")]
Count = Annotated[int, Ge(0)]
FisherKind = Annotated[str, StringConstraints(pattern=r"^(empirical|true)$")]


class ModelCommittedData(TypedDict):
    model: Name
    commit: Digest
    parents: list[Digest]
    manifest: Digest
    message: str
    branch: Name
    tensors: Count
    raw_bytes: Count
    stored_bytes: Count
    time: NotRequired[str]  # the commit id covers it; kept when the event travels elsewhere
    base: NotRequired[str | None]  # NAME@COMMIT of the model an adapter adapts
    author: NotRequired[str]  # who made the commit (the recorder may be a later puller)
    provenance: NotRequired[dict[str, Any]]  # what produced the tensors (a run, a merge, ...)


class BranchCreatedData(TypedDict):
    model: Name
    branch: Name
    commit: Digest


class BranchMovedData(TypedDict):
    model: Name
    branch: Name
    commit: Digest
    previous: Digest
    reason: MoveReason
    dropped: NotRequired[list[Digest]]  # a forced move: commits no longer reachable from it


class BranchDeletedData(TypedDict):
    model: Name
    branch: Name
    commit: Digest  # where it pointed


class TagCreatedData(TypedDict):
    model: Name
    tag: Name
    commit: Digest


class CommitEvaluatedData(TypedDict):
    model: Name
    commit: Digest
    dataset: str  # NAME@vN as resolved when evaluated
    dataset_version: Digest  # the version id: what was measured, whatever REF named it
    split: str | None  # a split column's value, or None for every row
    metrics: dict[str, float | str]  # "NaN"/"Infinity" as strings (JSON has none)
    rows: Count
    run: NotRequired[str | None]  # the tracking run that measured it, if any
    task: NotRequired[str | None]  # classification | causal-lm | ...


class FisherComputedData(TypedDict):
    model: Name
    commit: Digest
    dataset: str  # NAME@vN, with :SPLIT when one split was measured
    dataset_version: Digest
    object: Digest  # a safetensors object: the diagonal Fisher, same tensor names as the model
    examples: Count
    task: NotRequired[str | None]
    kind: NotRequired[FisherKind]  # empirical (the data's labels) or true (the model's own)
    seed: NotRequired[Count]  # of the examples' order (and a new head's initialisation)


Tags = dict[str, str]
Version = Annotated[int, Ge(1)]


class ModelRegisteredData(TypedDict):
    model: Name
    description: str
    tags: Tags


class ModelUnregisteredData(TypedDict):
    model: Name


class ModelRenamedData(TypedDict):
    model: Name
    name: Name  # the name MLflow clients see from now on


class ModelTagsSetData(TypedDict):
    model: Name
    version: Version | None  # None: the registered model's own tags
    tags: Tags
    deleted: list[str]


class ModelDescribedData(TypedDict):
    model: Name
    version: Version | None
    description: str


class ModelVersionCreatedData(TypedDict):
    model: Name
    version: Version
    commit: Digest
    source: str  # the URI the client registered (models:/m-..., runs:/..., ...)
    run: str | None
    logged_model: str | None
    tags: Tags
    description: str


class ModelVersionDeletedData(TypedDict):
    model: Name
    version: Version


def _no_self_parent(stream: str, data: Mapping[str, Any]) -> str | None:
    if data["commit"] in data["parents"]:
        return "a commit cannot be its own parent"
    return None


def _same_model(stream: str, data: Mapping[str, Any]) -> str | None:
    name = stream.removeprefix("model/")
    if data["model"] != name:
        return f"names model {data['model']!r}, but the stream is model {name!r}"
    for kind in ("branch", "tag"):
        if kind in data:
            problem = check_ref_name(kind, data[kind])
            if problem:
                return problem
    return check_model_name(name)


ModelCommitted = EventType("ModelCommitted", ModelCommittedData, check=_no_self_parent)
BranchCreated = EventType("BranchCreated", BranchCreatedData)
BranchMoved = EventType("BranchMoved", BranchMovedData)
BranchDeleted = EventType("BranchDeleted", BranchDeletedData)
TagCreated = EventType("TagCreated", TagCreatedData)
CommitEvaluated = EventType("CommitEvaluated", CommitEvaluatedData)
FisherComputed = EventType("FisherComputed", FisherComputedData)
ModelRegistered = EventType("ModelRegistered", ModelRegisteredData)
ModelUnregistered = EventType("ModelUnregistered", ModelUnregisteredData)
ModelRenamed = EventType("ModelRenamed", ModelRenamedData)
ModelTagsSet = EventType("ModelTagsSet", ModelTagsSetData)
ModelDescribed = EventType("ModelDescribed", ModelDescribedData)
ModelVersionCreated = EventType("ModelVersionCreated", ModelVersionCreatedData)
ModelVersionDeleted = EventType("ModelVersionDeleted", ModelVersionDeletedData)

DOMAIN = Domain(
    "model",
    streams=("model/",),
    types=(
        ModelCommitted,
        BranchCreated,
        BranchMoved,
        BranchDeleted,
        TagCreated,
        CommitEvaluated,
        FisherComputed,
        ModelRegistered,
        ModelUnregistered,
        ModelRenamed,
        ModelTagsSet,
        ModelDescribed,
        ModelVersionCreated,
        ModelVersionDeleted,
    ),
    writer="`fmforge model commit/branch/tag/reset/merge/rebase`, `fmforge eval`, "
    "`fmforge fisher`, "
    "push and pull, `fmforge ui`'s MLflow model registry",
    check=_same_model,
)
