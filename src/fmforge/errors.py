"""Every error fmforge raises on purpose, each with an HTTP status and a stable code.

The tree (each family is one domain; catch the root to catch them all)::

    FmforgeError
    ├── ConfigError                 a setting, URL or config file is wrong
    ├── RepositoryNotFound          no .fmforge/ here or in any parent
    ├── RepositoryExists            `init` over an existing repository
    ├── BackendUnavailable          a database or object endpoint cannot be reached
    ├── UsageError                  a command line or call that makes no sense as given
    ├── InvalidName                 a model, branch, tag, dataset or stream name breaks the rules
    ├── LedgerError
    │   ├── InvalidEvent            an event cannot be recorded (bad payload, reserved stream, ...)
    │   ├── StreamVersionConflict   optimistic concurrency check failed (.actual_version)
    │   ├── IdempotencyConflict     an event_id was reused for a different event
    │   ├── LedgerLocked            the ledger stayed locked past the busy timeout
    │   ├── ChainBroken             verify found a tampered, missing or reordered event (.seq)
    │   ├── ImportMismatch          an imported event does not reproduce its recorded hash
    │   ├── UpcasterError           upcaster chain has a gap or an upcaster failed
    │   ├── ProjectionError         a projection handler failed (.projection, .seq, .event_type)
    │   ├── ViewMismatch            a read model disagrees with the ledger (.projection, ...)
    │   └── UniqueViolation         internal: a backend's insert hit a stored event_id
    ├── ObjectStoreError
    │   ├── InvalidDigest           not a 64-character lowercase blake3 hex digest
    │   ├── ObjectNotFound          (.digest)
    │   └── CorruptObject           stored bytes do not hash to their digest (.digest)
    ├── TensorError
    │   ├── InvalidTensor           unknown dtype, bytes that do not fit the shape, ...
    │   └── CorruptTensor           an encoded tensor cannot be decoded
    ├── ModelError
    │   ├── ModelNotFound           no such model
    │   ├── RefNotFound             a branch, tag, commit or REF expression that resolves to nothing
    │   ├── InvalidModelSource      a PATH to commit that is not a model file or directory
    │   ├── BranchConflict          the branch moved while committing (.branch, .model)
    │   ├── BranchDiverged          a commit or move would drop the branch's history (.dropped)
    │   ├── InvalidMerge            a merge or rebase that cannot be done as specified
    │   ├── ModelExists             a registered model of that name exists already
    │   └── AliasNotFound           no alias of that name on a registered model
    ├── RemoteError
    │   ├── RemoteNotFound          no remote of that name is configured
    │   ├── NonFastForward          a push or pull would drop the other side's commits
    │   └── RemoteConflict          the remote changed during a push (nothing lost; push again)
    ├── DataError
    │   ├── DatasetNotFound         no dataset of that name, or no version matching the REF
    │   ├── InvalidDataSource       a file to add that cannot be read (names file, line, column)
    │   ├── SchemaClash             a new version's columns disagree with the previous one's
    │   ├── DatasetConflict         another writer recorded a version first
    │   ├── InvalidFilter           a --where filter or SQL rule that is not one safe expression
    │   ├── CleaningError           a cleaning rules file that cannot be read or run
    │   │   └── BadRule                 one rule whose options are wrong (.kind, .detail)
    │   ├── LabelingError           a labeling function or its file is wrong
    │   └── LabelModelError         a label matrix a label model cannot fit
    ├── TrackingError
    │   ├── RunNotFound             no run with that id or name
    │   ├── RunStopped              an anomaly action stopped the run
    │   ├── InvalidMetric           a logged value or step that cannot be recorded
    │   ├── QueryError              a runs query that does not parse or names nothing
    │   ├── ExperimentNotFound      no MLflow experiment with that id or name
    │   ├── ExperimentExists        an MLflow experiment of that name exists already
    │   ├── ParamChanged            a param logged again with another value (MLflow refuses it)
    │   └── RunNotActive            a change to a deleted run, or to a run of a deleted experiment
    ├── TrainingError
    │   ├── InvalidSpec             a finetune or eval request that cannot run (names the option)
    │   ├── TrainingFailed          a training process (a torchrun worker) failed
    │   └── FisherNotFound          no diagonal Fisher is recorded for that commit
    ├── ServingError
    │   ├── AdapterIncompatible     an adapter for another base, or one the served slots cannot hold
    │   ├── PromptTooLong           a prompt (with max_tokens) over the served context (.limit)
    │   ├── Overloaded              the request queues are full: 429 with Retry-After (.retry_after)
    │   ├── QueueTimeout            a request waited in the queue past its timeout
    │   └── DeploymentNotFound      no deployment of that name
    ├── RequestError
    │   ├── InvalidRequest          a malformed HTTP request (body, field, parameter)
    │   ├── EndpointNotFound        no such route
    │   │   └── MethodNotAllowed    the route exists but does not answer this method
    │   ├── PayloadTooLarge         a body or field over the configured limits
    │   └── RequestRefused          a foreign Host or Origin, or a state change without JSON
    └── AccessError
        ├── Unauthenticated         no credentials, or a token unknown, expired or revoked (.reason)
        ├── TooManyLogins           too many failed logins: 429 with Retry-After (.retry_after)
        ├── AccessDenied            the policy refuses this action on this resource (.reason)
        ├── InvalidPolicy           a policy file, rule, resource pattern or principal is wrong
        ├── ProofFailed             a Merkle proof or signed checkpoint does not verify (.detail)
        └── SubjectErased           a data subject's key was destroyed: their data is gone

Each class has ``http_status`` (what the server answers) and ``code`` (a stable snake_case
name, derived from the class name; clients may match on it). The CLI turns the whole tree into a
one-line message and exit code 1 (``fmforge.cli.context``); the server turns it into one JSON
shape (``fmforge.server.errors``).
"""

from __future__ import annotations

import re
from typing import ClassVar


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class FmforgeError(Exception):
    """Root of every error fmforge raises on purpose."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "fmforge_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = _snake(cls.__name__)


class ConfigError(FmforgeError):
    """A setting, URL or config file is wrong."""


class RepositoryNotFound(FmforgeError):
    """No `.fmforge/` directory in the given directory or any of its parents."""

    http_status = 404

    def __init__(self, start: str) -> None:
        super().__init__(
            f"no fmforge repository in {start} or any parent "
            "(run `fmforge init`, or pass --store / set FMFORGE_STORE)"
        )
        self.start = start


class RepositoryExists(FmforgeError):
    """`init` was asked to create a repository where one already is."""

    http_status = 409


class BackendUnavailable(FmforgeError):
    """A database server or object endpoint cannot be reached or refused the credentials."""

    http_status = 503


class UsageError(FmforgeError):
    """A command line or call that makes no sense as given (bad option value, missing file)."""

    http_status = 400


class InvalidName(FmforgeError):
    """A name (model, branch, tag, dataset, stream) that breaks the naming rules."""

    http_status = 400


class LedgerError(FmforgeError):
    """Family of ledger errors."""


class InvalidEvent(LedgerError):
    """An event cannot be recorded as given (payload schema, reserved stream, encoding)."""

    http_status = 400


class StreamVersionConflict(LedgerError):
    """The stream is not at the version the caller expected."""

    http_status = 409

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected_version = expected
        self.actual_version = actual


class IdempotencyConflict(LedgerError):
    """An event_id already recorded was sent again with different content."""

    http_status = 409

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event_id {event_id} was already recorded {reason}")
        self.event_id = event_id


class LedgerLocked(LedgerError):
    """Another writer held the ledger longer than the busy timeout."""

    http_status = 503


class ChainBroken(LedgerError):
    """The hash chain does not verify; ``seq`` is the first position that fails."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"ledger chain broken at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class ImportMismatch(LedgerError):
    """An imported event does not fit the chain it is appended to."""

    http_status = 400

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"cannot import event seq {seq}: {reason}")
        self.seq = seq


class UpcasterError(LedgerError):
    """The upcaster registry is inconsistent, or an upcaster failed on an event."""


class ProjectionError(LedgerError):
    """A projection handler failed on an event; its transaction was rolled back.

    Only validated events reach projections, so this is a bug in fmforge: the message names the
    projection, the event's seq and type, and the cause."""

    def __init__(
        self, projection: str, seq: int, cause: BaseException, event_type: str = ""
    ) -> None:
        kind = f" ({event_type})" if event_type else ""
        super().__init__(
            f"projection {projection!r} failed on seq {seq}{kind}: {type(cause).__name__}: {cause}"
        )
        self.projection = projection
        self.seq = seq
        self.event_type = event_type


class ViewMismatch(LedgerError):
    """A read model (``.fmforge/views.db``) disagrees with what the ledger says.

    Raised when a command that hands out bytes confirms what it resolved against the ledger,
    and by ``verify`` after rebuilding the views; ``fmforge verify --rebuild-views`` repairs."""

    def __init__(self, projection: str, detail: str) -> None:
        super().__init__(
            f"read model {projection!r} disagrees with the ledger: {detail} "
            "(run `fmforge verify --rebuild-views` to rebuild it from the ledger)"
        )
        self.projection = projection
        self.detail = detail


class UniqueViolation(LedgerError):
    """Internal to the event store: a backend's insert collided with a stored event_id (the
    store then redoes the batch with explicit look-ups); never escapes an append."""


class ObjectStoreError(FmforgeError):
    """Family of object store errors."""


class InvalidDigest(ObjectStoreError):
    """A string that is not a blake3 hex digest was used as one."""

    http_status = 400

    def __init__(self, value: str) -> None:
        super().__init__(f"not a blake3 digest (64 lowercase hex characters): {value!r}")
        self.value = value


class ObjectNotFound(ObjectStoreError):
    """No object with this digest is stored."""

    http_status = 404

    def __init__(self, digest: str, referenced_by: int | None = None) -> None:
        where = f" (referenced by event seq {referenced_by})" if referenced_by is not None else ""
        super().__init__(f"object {digest} not found{where}")
        self.digest = digest
        self.referenced_by = referenced_by


class CorruptObject(ObjectStoreError):
    """The stored bytes of an object do not hash to its digest."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"object {digest} is corrupt: {reason}")
        self.digest = digest
        self.reason = reason


class TensorError(FmforgeError):
    """Family of tensor encoding errors."""

    http_status = 400


class InvalidTensor(TensorError):
    """A tensor (or its dtype, shape or parent) cannot be encoded as given."""


class CorruptTensor(TensorError):
    """An encoded tensor does not decode."""

    http_status = 500


class ModelError(FmforgeError):
    """Family of model registry errors."""

    http_status = 400


class ModelNotFound(ModelError):
    """No model of that name."""

    http_status = 404


class RefNotFound(ModelError):
    """A REF that names no commit."""

    http_status = 404


class InvalidModelSource(ModelError):
    """What was given to commit is not a safetensors file or model directory."""


class BranchConflict(ModelError):
    """Another writer moved the branch first; nothing was recorded."""

    http_status = 409

    def __init__(self, model: str, branch: str) -> None:
        super().__init__(
            f"branch {branch!r} of model {model!r} moved while committing; nothing was recorded "
            "(look at `fmforge model log` and commit again)"
        )
        self.model = model
        self.branch = branch


class BranchDiverged(ModelError):
    """A commit or branch move that would drop commits of the branch's history; nothing was
    recorded (``force`` records the rewrite, naming the commits it drops)."""

    http_status = 409

    def __init__(self, model: str, branch: str, dropped: list[str], detail: str) -> None:
        super().__init__(detail)
        self.model = model
        self.branch = branch
        self.dropped = dropped


class InvalidMerge(ModelError):
    """A merge or rebase that cannot be done as specified (an unknown method, adapters on
    different bases, mismatched shapes or vocabularies, weights that do not match the inputs);
    nothing was recorded."""


class ModelExists(ModelError):
    """A registered model of that name exists already; nothing was recorded."""

    http_status = 409


class AliasNotFound(ModelError):
    """No alias of that name on a registered model (MLflow answers INVALID_PARAMETER_VALUE)."""

    http_status = 404


class RemoteError(FmforgeError):
    """A push, pull or clone that cannot proceed."""

    http_status = 400


class RemoteNotFound(RemoteError):
    """No remote of that name is configured."""

    http_status = 404


class NonFastForward(RemoteError):
    """The other side's branch has commits this side lacks: nothing was moved."""

    http_status = 409


class RemoteConflict(RemoteError):
    """The remote changed while pushing; what was sent is kept, push again."""

    http_status = 409


class DataError(FmforgeError):
    """Family of dataset errors."""

    http_status = 400


class DatasetNotFound(DataError):
    """No dataset of that name, or no version matching the REF."""

    http_status = 404


class InvalidDataSource(DataError):
    """A file to add that cannot be read: the message names the file, line and column."""


class SchemaClash(DataError):
    """A new version's columns disagree with the previous version's; nothing was recorded."""

    http_status = 409


class DatasetConflict(DataError):
    """Another writer recorded a version of the dataset first; nothing was recorded."""

    http_status = 409


class InvalidFilter(DataError):
    """A filter (``--where``, a cleaning rule's ``sql``) that is not one boolean expression
    over the dataset's columns, or that reaches for anything else (files, other tables)."""


class CleaningError(DataError):
    """A cleaning rule that cannot run as written."""


class BadRule(CleaningError):
    """A rule that cannot run as written; ``detail`` says why without naming the rule."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"rule {kind}: {detail}")
        self.kind, self.detail = kind, detail


class LabelingError(DataError):
    """A labeling function, its file, or what it was applied to is wrong."""


class LabelModelError(DataError):
    """A label matrix or its gold labels that a label model cannot fit."""


class TrackingError(FmforgeError):
    """Family of training-run errors."""

    http_status = 400


class RunNotFound(TrackingError):
    """No run with that id, unique id prefix or name."""

    http_status = 404


class RunStopped(TrackingError):
    """Raised by ``run.log`` after an anomaly whose action is to stop the run."""

    http_status = 409


class InvalidMetric(TrackingError):
    """A logged value that is not a number, a step outside int64, or a bad metric name;
    nothing of that call was recorded."""


class QueryError(TrackingError):
    """A runs query that does not parse, or that names a field no run has."""


class ExperimentNotFound(TrackingError):
    """No MLflow experiment (an fmforge project seen through MLflow's API) with that id or name."""

    http_status = 404


class ExperimentExists(TrackingError):
    """An MLflow experiment of that name exists already; nothing was recorded."""

    http_status = 409


class ParamChanged(TrackingError):
    """A param logged again with a different value: params are fixed once logged, as in
    MLflow; nothing was recorded."""


class RunNotActive(TrackingError):
    """A change to a deleted run (or one in a deleted experiment); restore it first."""


class TrainingError(FmforgeError):
    """Family of finetuning and evaluation errors."""


class ServingError(FmforgeError):
    """Family of errors of a serving deployment (``fmforge serve``)."""

    http_status = 400


class InvalidSpec(TrainingError):
    """A finetune spec or evaluation that cannot run as given (an unknown method, a missing
    column, labels the data does not hold, a base that is no registered model...); refused
    before anything is recorded."""


class TrainingFailed(TrainingError):
    """A training process failed outside fmforge's checks (a torchrun worker died)."""

    http_status = 500


class FisherNotFound(TrainingError):
    """No diagonal Fisher is recorded for that commit (``fmforge fisher`` computes one)."""

    http_status = 404


class AdapterIncompatible(ServingError):
    """An adapter whose recorded base is not the served base, or that the served slots cannot
    hold (a rank over the maximum, a module outside the LoRA targets, an unsupported kind)."""

    def __init__(self, adapter: str, detail: str) -> None:
        super().__init__(f"adapter {adapter}: {detail}")
        self.adapter = adapter
        self.detail = detail


class PromptTooLong(ServingError):
    """A prompt whose tokens, with the tokens asked for, are over the served context."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Overloaded(ServingError):
    """The request queues are full; retry after ``retry_after`` seconds (HTTP 429)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueTimeout(ServingError):
    """A request waited in the queue longer than its timeout; nothing was generated."""

    http_status = 503


class DeploymentNotFound(ServingError):
    """No deployment of that name was ever started."""

    http_status = 404


class RequestError(FmforgeError):
    """Family of HTTP request errors (the server's edge)."""

    http_status = 400


class InvalidRequest(RequestError):
    """A malformed request: body, field type, missing field or query parameter."""


class EndpointNotFound(RequestError):
    """No route answers this method and path."""

    http_status = 404


class MethodNotAllowed(EndpointNotFound):
    """The route exists but does not answer this method (``.allow``: the methods it does)."""

    http_status = 405

    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(RequestError):
    """A request body or one of its fields is over the configured limit."""

    http_status = 413


class RequestRefused(RequestError):
    """A Host header not configured, a cross-site Origin, or a state-changing request that is
    not JSON: refused before anything ran."""

    http_status = 403


class AccessError(FmforgeError):
    """Family of access-control, audit and erasure errors."""

    http_status = 403


class Unauthenticated(AccessError):
    """No credentials, or credentials that prove nothing: ``reason`` is ``unauthenticated``
    (none given), ``malformed``, ``unknown_token``, ``expired`` or ``revoked``."""

    http_status = 401

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"not authenticated ({reason}){': ' + detail if detail else ''}")
        self.reason = reason


class TooManyLogins(AccessError):
    """Too many failed logins for this principal from this address; retry after
    ``retry_after`` seconds (HTTP 429)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccessDenied(AccessError):
    """The policy refuses ``action`` on ``resource`` to ``principal``; ``reason`` is a stable
    code: ``no_grant``, ``forbid:pii``, ``forbid:licence``, ``retention``, ``token_scope``,
    ``forbid:<rule id>``, ..."""

    http_status = 403

    def __init__(
        self, principal: str, action: str, resource: str, reason: str, detail: str = ""
    ) -> None:
        why = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{principal} may not {action} {resource} ({why})")
        self.principal = principal
        self.action = action
        self.resource = resource
        self.reason = reason
        self.detail = detail


class InvalidPolicy(AccessError):
    """A policy file, rule, condition, resource pattern, role or principal name that is wrong;
    nothing was recorded."""

    http_status = 400


class ProofFailed(AccessError):
    """A Merkle inclusion or consistency proof, or a signed checkpoint, that does not verify:
    the history a checkpoint vouches for is not the one presented."""

    http_status = 409

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SubjectErased(AccessError):
    """The data subject's key was destroyed (crypto-shredding): what was encrypted under it
    cannot be read any more."""

    http_status = 410

    def __init__(self, key_id: str) -> None:
        super().__init__(f"the key {key_id} was destroyed: the subject's data is erased")
        self.key_id = key_id
