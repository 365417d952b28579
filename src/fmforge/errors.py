"""Every error fmforge raises on purpose.

The tree (each family is one domain; catch the root to catch them all)::

    FmforgeError
    ├── ConfigError                 a setting, URL or config file is wrong
    ├── RepositoryNotFound          no .fmforge/ here or in any parent
    ├── RepositoryExists            `init` over an existing repository
    ├── BackendUnavailable          a database or object endpoint cannot be reached
    ├── LedgerError
    │   ├── InvalidEvent            an event cannot be encoded (bad name, NaN, huge int, ...)
    │   ├── StreamVersionConflict   optimistic concurrency check failed (.actual_version)
    │   ├── IdempotencyConflict     an event_id was reused for a different event
    │   ├── LedgerLocked            the ledger stayed locked past the busy timeout
    │   ├── ChainBroken             verify found a tampered, missing or reordered event (.seq)
    │   ├── ImportMismatch          an imported event does not reproduce its recorded hash
    │   ├── UpcasterError           upcaster chain has a gap or an upcaster failed
    │   └── ProjectionError         a projection handler failed (.projection, .seq)
    ├── ObjectStoreError
    │   ├── InvalidDigest           not a 64-character lowercase blake3 hex digest
    │   ├── ObjectNotFound          (.digest)
    │   └── CorruptObject           stored bytes do not hash to their digest (.digest)
    ├── TensorError
    │   ├── InvalidTensor           unknown dtype, bytes that do not fit the shape, ...
    │   └── CorruptTensor           an encoded tensor cannot be decoded
    ├── ModelError
    │   ├── ModelNotFound           no such model, or an invalid model name
    │   ├── RefNotFound             a branch, tag, commit or REF expression that resolves to nothing
    │   ├── InvalidModelSource      a PATH to commit that is not a model file or directory
    │   └── BranchConflict          the branch moved while committing (.branch, .model)
    └── RemoteError
        ├── RemoteNotFound          no remote of that name is configured
        ├── NonFastForward          a push or pull would drop the other side's commits
        └── RemoteConflict          the remote changed during a push (nothing lost; push again)

The CLI maps this whole tree to a one-line message and exit code 1 (see ``fmforge.cli.app``).
"""

from __future__ import annotations


class FmforgeError(Exception):
    """Root of every error fmforge raises on purpose."""


class ConfigError(FmforgeError):
    """A setting, URL or config file is wrong."""


class RepositoryNotFound(FmforgeError):
    """No `.fmforge/` directory in the given directory or any of its parents."""

    def __init__(self, start: str) -> None:
        super().__init__(
            f"no fmforge repository in {start} or any parent "
            "(run `fmforge init`, or pass --store / set FMFORGE_STORE)"
        )
        self.start = start


class RepositoryExists(FmforgeError):
    """`init` was asked to create a repository where one already is."""


class BackendUnavailable(FmforgeError):
    """A database server or object endpoint cannot be reached or refused the credentials."""


class LedgerError(FmforgeError):
    """Family of ledger errors."""


class InvalidEvent(LedgerError):
    """An event cannot be recorded as given."""


class StreamVersionConflict(LedgerError):
    """The stream is not at the version the caller expected."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected_version = expected
        self.actual_version = actual


class IdempotencyConflict(LedgerError):
    """An event_id already recorded was sent again with different content."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event_id {event_id} was already recorded {reason}")
        self.event_id = event_id


class LedgerLocked(LedgerError):
    """Another writer held the ledger longer than the busy timeout."""


class ChainBroken(LedgerError):
    """The hash chain does not verify; ``seq`` is the first position that fails."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"ledger chain broken at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class ImportMismatch(LedgerError):
    """An imported event does not fit the chain it is appended to."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"cannot import event seq {seq}: {reason}")
        self.seq = seq


class UpcasterError(LedgerError):
    """The upcaster registry is inconsistent, or an upcaster failed on an event."""


class ProjectionError(LedgerError):
    """A projection handler failed; its transaction was rolled back."""

    def __init__(self, projection: str, seq: int, cause: BaseException) -> None:
        super().__init__(f"projection {projection!r} failed on seq {seq}: {cause}")
        self.projection = projection
        self.seq = seq


class ObjectStoreError(FmforgeError):
    """Family of object store errors."""


class InvalidDigest(ObjectStoreError):
    """A string that is not a blake3 hex digest was used as one."""

    def __init__(self, value: str) -> None:
        super().__init__(f"not a blake3 digest (64 lowercase hex characters): {value!r}")
        self.value = value


class ObjectNotFound(ObjectStoreError):
    """No object with this digest is stored."""

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


class InvalidTensor(TensorError):
    """A tensor (or its dtype, shape or parent) cannot be encoded as given."""


class CorruptTensor(TensorError):
    """An encoded tensor does not decode."""


class ModelError(FmforgeError):
    """Family of model registry errors."""


class ModelNotFound(ModelError):
    """No model of that name, or the name is not a valid model name."""


class RefNotFound(ModelError):
    """A REF that names no commit."""


class InvalidModelSource(ModelError):
    """What was given to commit is not a safetensors file or model directory."""


class BranchConflict(ModelError):
    """Another writer moved the branch first; nothing was recorded."""

    def __init__(self, model: str, branch: str) -> None:
        super().__init__(
            f"branch {branch!r} of model {model!r} moved while committing; nothing was recorded "
            "(look at `fmforge model log` and commit again)"
        )
        self.model = model
        self.branch = branch


class RemoteError(FmforgeError):
    """A push, pull or clone that cannot proceed."""


class RemoteNotFound(RemoteError):
    """No remote of that name is configured."""


class NonFastForward(RemoteError):
    """The other side's branch has commits this side lacks: nothing was moved."""


class RemoteConflict(RemoteError):
    """The remote changed while pushing; what was sent is kept, push again."""


class DataError(FmforgeError):
    """Family of dataset errors."""


class DatasetNotFound(DataError):
    """No dataset of that name, or no version matching the REF."""


class InvalidDataSource(DataError):
    """A file to add that cannot be read: the message names the file, line and column."""


class SchemaClash(DataError):
    """A new version's columns disagree with the previous version's; nothing was recorded."""


class DatasetConflict(DataError):
    """Another writer recorded a version of the dataset first; nothing was recorded."""
