"""The dataset domain's events, on streams ``dataset/<name>``.

``DatasetVersionCommitted`` records each version (its manifest, parents and the transformation
that made it); ``DatasetTagged`` what the dataset declares (licence, personal-data columns, the
subject id column, consent); the others record the work done on versions: cleaning verdicts,
label-issue queues and verdicts, label matrices, manual labels, forgotten rows, synthesized
labeling functions and their reviews, and cached embeddings of a version's texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import DIGEST_PATTERN, Domain, EventType

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
RowId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Count = Annotated[int, Ge(0)]
Text = Annotated[str, StringConstraints(max_length=1 << 16)]


class Column(TypedDict):
    name: str
    type: str


class DatasetVersionCommittedData(TypedDict):
    dataset: str
    number: Annotated[int, Ge(1)]
    version: Digest
    parents: list[Digest]
    manifest: Digest
    rows: Count
    columns: list[Column]
    transformation: dict[str, Any]  # {"kind": add | clean | label | merge | forget | ..., ...}
    message: Text


class CleaningReviewedData(TypedDict):
    row_id: RowId
    rule: dict[str, Any]
    action: str
    verdict: Annotated[str, StringConstraints(pattern=r"^(accept|override)$")]
    reviewer: str
    note: Text
    version: Digest


class LabelIssue(TypedDict):
    row_id: RowId
    given: Any
    suggested: Any
    quality: float


class LabelIssuesFoundData(TypedDict):
    version: Digest
    label_column: str
    features: str
    rows: Count
    issues: list[LabelIssue]


class LabelIssueReviewedData(TypedDict):
    row_id: RowId
    verdict: Annotated[str, StringConstraints(pattern=r"^(relabel|keep)$")]
    label: Any
    reviewer: str


class LabelingFunctionRecord(TypedDict):
    name: str
    kind: str
    version: str
    column: Digest


class LabelMatrixBuiltData(TypedDict):
    version: Digest
    labels: list[str]
    lfs: list[LabelingFunctionRecord]
    computed: list[str]


class ManualLabelSetData(TypedDict):
    row_id: RowId
    label: Any
    labeler: str
    version: Digest


class RowsForgottenData(TypedDict):
    dataset: str
    version: Digest
    rows: Count
    earlier_forms: Count
    reason: Text
    erased_chunks: Count
    still_live: Count
    runs: list[dict[str, Any]]
    models: list[dict[str, Any]]
    subject: NotRequired[str]


class EmbeddingsComputedData(TypedDict):
    version: Digest  # the dataset version whose texts (or derived texts) were embedded
    what: Annotated[str, StringConstraints(max_length=200)]  # "column text", "vocabulary", ...
    model: Annotated[str, StringConstraints(max_length=200)]  # fmforge.embeddings.model_key
    texts: Count
    dim: Count
    object: Digest


ProposalId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
LFVersion = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class LabelingFunctionProposedData(TypedDict):
    proposal: ProposalId  # blake3 of dataset, intent, example set and LF version
    version: Digest  # the dataset version it was synthesized on
    intent: Text
    examples: Digest  # the digest of the example set (order-blind)
    seed: int
    generator: Annotated[str, StringConstraints(max_length=100)]  # keywords, stump, ...
    generator_version: Annotated[str, StringConstraints(max_length=100)]
    labels: list[str]
    column: str
    kind: Annotated[str, StringConstraints(max_length=100)]  # keyword, threshold, ...
    lf: dict[str, Any]  # its YAML entry, as written to the LF file
    lf_version: LFVersion
    scores: dict[str, float]  # out-of-fold precision and votes, coverage of unlabelled rows


class LabelingFunctionReviewedData(TypedDict):
    proposal: ProposalId
    verdict: Annotated[str, StringConstraints(pattern=r"^(accept|reject)$")]
    reviewer: str
    note: Text


class DatasetTaggedData(TypedDict):
    """What a dataset declares about itself, whole (the newest ``DatasetTagged`` is in force):
    access control decides with it at the moment of access (``fmforge.access.compliance``)
    and a ``subject_id`` makes its ``pii`` cells stored encrypted per subject."""

    dataset: str
    licence: Annotated[str, StringConstraints(max_length=200)] | None  # e.g. CC-BY-NC-4.0
    pii: list[Annotated[str, StringConstraints(min_length=1, max_length=1000)]]  # columns
    subject_id: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None
    consent: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None
    pii_mode: Annotated[str, StringConstraints(pattern=r"^(mask|deny)$")] | None


DatasetVersionCommitted = EventType("DatasetVersionCommitted", DatasetVersionCommittedData)
DatasetTagged = EventType("DatasetTagged", DatasetTaggedData)


def _one_rule(stream: str, data: Mapping[str, Any]) -> str | None:
    return None if len(data["rule"]) == 1 else "rule names exactly one kind, e.g. {'dedup': {}}"


CleaningReviewed = EventType("CleaningReviewed", CleaningReviewedData, check=_one_rule)
LabelIssuesFound = EventType("LabelIssuesFound", LabelIssuesFoundData)
LabelIssueReviewed = EventType("LabelIssueReviewed", LabelIssueReviewedData)
LabelMatrixBuilt = EventType("LabelMatrixBuilt", LabelMatrixBuiltData)
ManualLabelSet = EventType("ManualLabelSet", ManualLabelSetData)
RowsForgotten = EventType("RowsForgotten", RowsForgottenData)
EmbeddingsComputed = EventType("EmbeddingsComputed", EmbeddingsComputedData)
LabelingFunctionProposed = EventType("LabelingFunctionProposed", LabelingFunctionProposedData)
LabelingFunctionReviewed = EventType("LabelingFunctionReviewed", LabelingFunctionReviewedData)


def _same_dataset(stream: str, data: Mapping[str, Any]) -> str | None:
    from fmforge.data.names import check_dataset_name

    name = stream.removeprefix("dataset/")
    if "dataset" in data and data["dataset"] != name:
        return f"names dataset {data['dataset']!r}, but the stream is dataset {name!r}"
    return check_dataset_name(name)


DOMAIN = Domain(
    "dataset",
    streams=("dataset/",),
    types=(
        DatasetVersionCommitted,
        DatasetTagged,
        CleaningReviewed,
        LabelIssuesFound,
        LabelIssueReviewed,
        LabelMatrixBuilt,
        ManualLabelSet,
        RowsForgotten,
        EmbeddingsComputed,
        LabelingFunctionProposed,
        LabelingFunctionReviewed,
    ),
    writer="`fmforge data ...` and `fmforge label ...`",
    check=_same_dataset,
)
