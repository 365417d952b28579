"""Training runs' events, on streams ``run/<run id>``, and experiments (MLflow's name for a
project) on ``experiment/<id>``.

A run's stream starts with ``RunStarted`` and ends with ``RunFinished``; between them the
writer thread records ``MetricsLogged`` once per flush (the chunk's digest, a summary per
metric and, since pyramids, the digest of the block summaries the flush closed), and the run
records what the loop reports. ``RunResumed`` re-opens an ended run (MLflow's
``start_run(run_id=...)``); ``RunDeleted``/``RunRestored`` move it to and from MLflow's
``deleted`` lifecycle stage (history stays). ``ArtifactLogged`` names a file of the run (its
path and the digest of its bytes in the object store; a later one at the same path replaces
it), also on the streams ``logged-model/<id>`` of MLflow's logged models, whose other facts
are the ``LoggedModel*`` events.
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
    experiment: NotRequired[str]  # the MLflow experiment it was created in (by id)


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


ExperimentName = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ExperimentCreatedData(TypedDict):
    experiment_id: str
    name: ExperimentName
    tags: NotRequired[dict[str, str]]


class ExperimentRenamedData(TypedDict):
    experiment_id: str
    name: ExperimentName


class ExperimentLifecycleData(TypedDict):
    experiment_id: str
    time: float


class ExperimentTagsSetData(TypedDict):
    experiment_id: str
    tags: dict[str, str]
    deleted: list[str]


class TagsDeletedData(TypedDict):
    keys: list[str]


class RunLifecycleData(TypedDict):
    time: float


ArtifactPath = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class ArtifactLoggedData(TypedDict):
    path: ArtifactPath  # relative, "/"-separated, no "." or ".." parts
    digest: Digest
    size: Count


class ArtifactDeletedData(TypedDict):
    path: ArtifactPath


class DatasetInputData(TypedDict):
    name: str
    digest: str
    source_type: str
    source: str
    schema: NotRequired[str]
    profile: NotRequired[str]
    tags: dict[str, str]  # MLflow's input tags (``mlflow.data.context``: training, eval...)
    version: NotRequired[str]  # the fmforge dataset version it names (NAME@vN), if any


class InputsLoggedData(TypedDict):
    datasets: list[DatasetInputData]
    models: NotRequired[list[str]]  # logged model ids the run used


class OutputsLoggedData(TypedDict):
    models: list[dict[str, Any]]  # {"model_id": ..., "step": ...}: logged models the run made


class LoggedModelCreatedData(TypedDict):
    model_id: str
    experiment_id: str
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    run: str | None
    model_type: str | None
    params: dict[str, str]
    tags: dict[str, str]
    created: float


class LoggedModelFinalizedData(TypedDict):
    status: Annotated[str, StringConstraints(pattern=r"^(READY|FAILED)$")]
    time: float


class LoggedModelTagsSetData(TypedDict):
    tags: dict[str, str]
    deleted: list[str]


class LoggedModelParamsLoggedData(TypedDict):
    params: dict[str, str]


class LoggedModelDeletedData(TypedDict):
    time: float


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
ExperimentRenamed = EventType("ExperimentRenamed", ExperimentRenamedData)
ExperimentDeleted = EventType("ExperimentDeleted", ExperimentLifecycleData)
ExperimentRestored = EventType("ExperimentRestored", ExperimentLifecycleData)
ExperimentTagsSet = EventType("ExperimentTagsSet", ExperimentTagsSetData)
RunResumed = EventType("RunResumed", RunLifecycleData)
RunDeleted = EventType("RunDeleted", RunLifecycleData)
RunRestored = EventType("RunRestored", RunLifecycleData)
TagsDeleted = EventType("TagsDeleted", TagsDeletedData)
ArtifactLogged = EventType("ArtifactLogged", ArtifactLoggedData)
ArtifactDeleted = EventType("ArtifactDeleted", ArtifactDeletedData)
InputsLogged = EventType("InputsLogged", InputsLoggedData)
OutputsLogged = EventType("OutputsLogged", OutputsLoggedData)
LoggedModelCreated = EventType("LoggedModelCreated", LoggedModelCreatedData)
LoggedModelFinalized = EventType("LoggedModelFinalized", LoggedModelFinalizedData)
LoggedModelTagsSet = EventType("LoggedModelTagsSet", LoggedModelTagsSetData)
LoggedModelParamsLogged = EventType("LoggedModelParamsLogged", LoggedModelParamsLoggedData)
LoggedModelDeleted = EventType("LoggedModelDeleted", LoggedModelDeletedData)


def _same_run(stream: str, data: Mapping[str, Any]) -> str | None:
    if stream.startswith("run/") and "run" in data and data["run"] != stream[4:]:
        return f"names run {data['run']!r}, but the stream is run {stream[4:]!r}"
    experiment = stream.removeprefix("experiment/")
    if stream.startswith("experiment/") and data.get("experiment_id", experiment) != experiment:
        return "experiment_id differs from the stream's"
    model = stream.removeprefix("logged-model/")
    if stream.startswith("logged-model/") and data.get("model_id", model) != model:
        return "model_id differs from the stream's"
    return None


DOMAIN = Domain(
    "tracking",
    streams=("run/", "experiment/", "logged-model/"),
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
        ExperimentRenamed,
        ExperimentDeleted,
        ExperimentRestored,
        ExperimentTagsSet,
        RunResumed,
        RunDeleted,
        RunRestored,
        TagsDeleted,
        ArtifactLogged,
        ArtifactDeleted,
        InputsLogged,
        OutputsLogged,
        LoggedModelCreated,
        LoggedModelFinalized,
        LoggedModelTagsSet,
        LoggedModelParamsLogged,
        LoggedModelDeleted,
    ),
    writer="training runs (`fmforge.start_run`, the integrations, `fmforge ui`'s MLflow API)",
    check=_same_run,
)
