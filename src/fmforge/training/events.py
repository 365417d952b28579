"""The training domain's events: hyperparameter searches and model selections.

A search (``finetune --auto``, ``fmforge.training.search``) writes on ``search/<id>``:
``SearchStarted`` (the base spec, space, budgets, pruner), one ``TrialFinished`` per trial (its
run, parameters, objective, state: ``complete``, ``pruned`` by the pruner, ``interrupted`` by a
wall-time budget, or ``failed``), then ``SearchFinished`` (the best trial and the tag on its
commit, why it stopped, the steps spent). A selection (``fmforge model select``,
``fmforge.training.selection``) records one ``ModelSelected`` on ``selection/<id>``: every
candidate's LogME and linear-probe scores, both rankings, their Kendall tau and the pick. The
finetunes themselves are runs and commits of the tracking and model domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventType

Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Count = Annotated[int, Ge(0)]
TrialState = Annotated[str, StringConstraints(pattern=r"^(complete|pruned|interrupted|failed)$")]
StopReason = Annotated[str, StringConstraints(pattern=r"^(trials|wall|failed)$")]
Direction = Annotated[str, StringConstraints(pattern=r"^(maximize|minimize)$")]


class SearchStartedData(TypedDict):
    search: Id
    spec: dict[str, Any]  # the base FinetuneSpec, resolved
    space: dict[str, Any]  # parameter -> {"low", "high", "log"} or {"choices"}
    budget: dict[str, Any]  # trials, wall_s, trial_wall_s
    pruner: dict[str, Any]  # {"kind": "asha", "eta", "min_steps"}
    sampler: dict[str, Any]  # {"kind", "seed", "startup_trials"}
    objective: str  # eval_<metric>
    direction: Direction


class TrialFinishedData(TypedDict):
    search: Id
    trial: Count
    run: str | None  # the trial's tracking run (None: it failed before one started)
    state: TrialState
    params: dict[str, Any]
    value: float | None  # the objective at its end (complete) or last evaluation
    steps: Count
    seconds: float
    commit: NotRequired[str | None]  # NAME@COMMIT of a complete trial's result
    reason: NotRequired[str | None]  # why it did not complete


class SearchFinishedData(TypedDict):
    search: Id
    trials: Count
    stopped_by: StopReason
    steps: Count  # training steps of every trial together
    seconds: float
    best: dict[str, Any] | None  # trial, run, params, value, commit
    tag: str | None  # the tag on the best commit (auto/<search>/best)


class CandidateScore(TypedDict):
    model: str  # NAME@COMMIT
    logme: float
    probe: float  # k-fold linear-probe accuracy
    features: Count  # feature dimension
    seconds: float


class ModelSelectedData(TypedDict):
    selection: Id
    dataset: str  # NAME@vN[:split]
    dataset_version: Digest
    examples: Count
    candidates: list[CandidateScore]
    logme_ranking: list[str]  # NAME@COMMIT, best first
    probe_ranking: list[str]
    kendall_tau: float | None  # None with fewer than two candidates
    pick: str  # NAME@COMMIT: LogME's best
    folds: Count
    seconds: float
    skipped: NotRequired[list[str]]  # "NAME@COMMIT: why" of default candidates that failed


def _own_stream(stream: str, data: Mapping[str, Any]) -> str | None:
    key = "search" if "search" in data else "selection"
    if stream != f"{key}/{data.get(key)}":
        return f"names {key} {data.get(key)!r}, but the stream is {stream!r}"
    return None


SearchStarted = EventType("SearchStarted", SearchStartedData)
TrialFinished = EventType("TrialFinished", TrialFinishedData)
SearchFinished = EventType("SearchFinished", SearchFinishedData)
ModelSelected = EventType("ModelSelected", ModelSelectedData)

DOMAIN = Domain(
    "training",
    streams=("search/", "selection/"),
    types=(SearchStarted, TrialFinished, SearchFinished, ModelSelected),
    writer="`fmforge finetune --auto` and `fmforge model select`",
    check=_own_stream,
)
