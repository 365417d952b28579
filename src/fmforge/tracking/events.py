"""Training runs' events, on streams ``run/<run id>``, and experiments (MLflow's name for a
project) on ``experiment/<id>``.

A run's stream starts with ``RunStarted`` and ends with ``RunFinished``; between them the
writer thread records ``MetricsLogged`` once per flush (the chunk's digest, a summary per
metric and, since pyramids, the digest of the block summaries the flush closed), and the run
records what the loop reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge, Le
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventType

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Count = Annotated[int, Ge(0)]
Step = Annotated[int, Ge(-(2**63)), Le(2**63 - 1)]  # int64, as run.log refuses beyond
Number = float | str  # a float, or "NaN" / "Infinity" / "-Infinity" (JSON has none)


class RunStartedData(TypedDict):
    run: str
    project: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    config: dict[str, Any]
    config_flat: dict[str, Any]
    datasets: list[str]
    base_model: str | None
    seed: Any
    tags: list[str]
    started: float


class MetricSummary(TypedDict):
    count: Count
    last: float | None
    min: float | None
    max: float | None
    non_finite: Count
    last_step: Step
    step_min: NotRequired[Step]  # the smallest and largest step of the chunk
    step_max: NotRequired[Step]


class MetricsLoggedData(TypedDict):
    chunk: Digest
    bytes: Count
    values: Count
    metrics: dict[str, MetricSummary]
    pyramid: NotRequired[Digest]  # the summaries this flush closed (``tracking.pyramid``)


class ParamsLoggedData(TypedDict):
    params: dict[str, Any]


class TagsSetData(TypedDict):
    tags: dict[str, str]


class SampleLoggedData(TypedDict):
    step: Step
    inputs: Any
    outputs: Any


class EvalLoggedData(TypedDict):
    step: Step
    metrics: dict[str, Number]
    dataset: str | None


class CheckpointLoggedData(TypedDict):
    step: Step
    model: str
    commit: Digest


class AnomalyDetectedData(TypedDict):
    detector: str
    metric: str
    step: Step
    value: float | None
    severity: str
    evidence: str
    last_seen: NotRequired[float]  # heartbeat_lost: the silence it is about
    last_good_checkpoint: NotRequired[dict[str, Any]]


class RunEnvironmentData(TypedDict, total=False):
    code: dict[str, Any]  # git commit, whether the tree was dirty, a hash of the changes
    command: list[str]
    python: str
    implementation: str
    platform: str
    host: str
    packages: dict[str, str]


class RunHeartbeatData(TypedDict):
    time: float


class RunFinishedData(TypedDict):
    status: Annotated[str, StringConstraints(pattern=r"^(finished|failed|stopped|killed)$")]
    duration_s: float
    summary: dict[str, MetricSummary]
    anomalies: Count
    error: NotRequired[str]


class ExperimentCreatedData(TypedDict):
    experiment_id: str
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]


RunStarted = EventType("RunStarted", RunStartedData)
RunEnvironment = EventType("RunEnvironment", RunEnvironmentData)
MetricsLogged = EventType("MetricsLogged", MetricsLoggedData)
ParamsLogged = EventType("ParamsLogged", ParamsLoggedData)
TagsSet = EventType("TagsSet", TagsSetData)
SampleLogged = EventType("SampleLogged", SampleLoggedData)
EvalLogged = EventType("EvalLogged", EvalLoggedData)
CheckpointLogged = EventType("CheckpointLogged", CheckpointLoggedData)
AnomalyDetected = EventType("AnomalyDetected", AnomalyDetectedData)
RunHeartbeat = EventType("RunHeartbeat", RunHeartbeatData)
RunFinished = EventType("RunFinished", RunFinishedData)
ExperimentCreated = EventType("ExperimentCreated", ExperimentCreatedData)


def _same_run(stream: str, data: Mapping[str, Any]) -> str | None:
    if stream.startswith("run/") and "run" in data and data["run"] != stream[4:]:
        return f"names run {data['run']!r}, but the stream is run {stream[4:]!r}"
    experiment = stream.removeprefix("experiment/")
    if stream.startswith("experiment/") and data.get("experiment_id", experiment) != experiment:
        return "experiment_id differs from the stream's"
    return None


DOMAIN = Domain(
    "tracking",
    streams=("run/", "experiment/"),
    types=(
        RunStarted,
        RunEnvironment,
        MetricsLogged,
        ParamsLogged,
        TagsSet,
        SampleLogged,
        EvalLogged,
        CheckpointLogged,
        AnomalyDetected,
        RunHeartbeat,
        RunFinished,
        ExperimentCreated,
    ),
    writer="training runs (`fmforge.start_run`, the integrations, `fmforge ui`'s MLflow API)",
    check=_same_run,
)
