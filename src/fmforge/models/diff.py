"""Per-tensor comparison of two model versions, with a summary per layer.

Tensors whose raw hash is equal are unchanged without being read. For a changed tensor of the
same dtype and shape the statistics are computed in float64 over row chunks (memory ~ the two
tensors): L2 norm of the delta, relative change ``||B - A|| / ||A||``, max ``|B - A|``, the
fraction of entries that changed, the cosine between the two versions, and for matrices the
rank of the delta (singular values holding 99% of its energy, from the Gram matrix).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.models.checkout import CommitReader
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec

_CHUNK_ELEMENTS = 1 << 22
_ENERGY = 0.99
_MAX_RANK_SIDE = 8192  # the Gram matrix is side^2 float64s; larger matrices get no rank
_LAYER_RE = re.compile(r"^((?:.*?\.)?(?:layer|layers|h|blocks|block)\.\d+)\.")


@dataclass
class TensorDiff:
    name: str
    status: str  # unchanged | changed | added | removed
    dtype: str | None = None
    shape: list[int] | None = None
    old_dtype: str | None = None  # set when the dtype changed
    old_shape: list[int] | None = None  # set when the shape changed
    l2: float | None = None
    relative: float | None = None
    max_abs: float | None = None
    fraction_changed: float | None = None
    cosine: float | None = None
    rank: int | None = None


@dataclass
class LayerSummary:
    layer: str
    tensors: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0
    l2: float = 0.0  # of the delta over the layer's comparable tensors
    relative: float = 0.0

    _norm_sq: float = field(default=0.0, repr=False)


@dataclass
class ModelDiff:
    old: str  # NAME@COMMIT
    new: str
    tensors: list[TensorDiff]
    layers: list[LayerSummary]
    files: dict[str, list[str]]  # non-tensor files: added / removed / changed

    def counts(self) -> dict[str, int]:
        out = {"unchanged": 0, "changed": 0, "added": 0, "removed": 0}
        for t in self.tensors:
            out[t.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        layers = [
            {k: v for k, v in asdict(s).items() if not k.startswith("_")} for s in self.layers
        ]
        return {
            "old": self.old,
            "new": self.new,
            "counts": self.counts(),
            "tensors": [asdict(t) for t in self.tensors],
            "layers": layers,
            "files": self.files,
        }


def layer_of(name: str) -> str:
    """``encoder.layer.3.attention.self.query.weight`` -> ``encoder.layer.3``."""
    match = _LAYER_RE.match(name)
    if match:
        return match.group(1)
    return name.split(".", 1)[0] if "." in name else name


@mediated("read", targets.needs(("read", targets.model("old")), ("read", targets.model("new"))))
def diff_models(
    repo: Repository, old: str, new: str, *, tensors: str | None = None, rank: bool = True
) -> ModelDiff:
    """Compare ``old`` and ``new`` (each ``NAME@REF``; a bare REF in ``new`` means old's model)."""
    a = CommitReader(repo, old)
    b = CommitReader(repo, new if "@" in new or new in _models(repo) else f"{a.model}@{new}")
    old_tensors = {name: (h, spec) for name, h, spec in a.tensors()}
    new_tensors = {name: (h, spec) for name, h, spec in b.tensors()}
    names = list(old_tensors) + [n for n in new_tensors if n not in old_tensors]
    if tensors is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, tensors)]
    results: list[TensorDiff] = []
    layers: dict[str, LayerSummary] = {}
    for name in names:
        before, after = old_tensors.get(name), new_tensors.get(name)
        summary = layers.setdefault(layer_of(name), LayerSummary(layer_of(name)))
        summary.tensors += 1
        if after is None:
            assert before is not None
            results.append(TensorDiff(name, "removed", before[1].dtype, list(before[1].shape)))
            summary.removed += 1
            continue
        spec = after[1]
        entry = TensorDiff(name, "changed", spec.dtype, list(spec.shape))
        if before is None:
            entry.status = "added"
            summary.added += 1
        elif before[0] == after[0]:
            entry.status = "unchanged"
            entry.l2, entry.relative, entry.max_abs, entry.fraction_changed = 0.0, 0.0, 0.0, 0.0
            entry.cosine = 1.0
        else:
            summary.changed += 1
            if before[1].dtype != spec.dtype:
                entry.old_dtype = before[1].dtype
            if before[1].shape != spec.shape:
                entry.old_shape = list(before[1].shape)
            if entry.old_dtype is None and entry.old_shape is None:
                _statistics(entry, a.tensor_bytes(before[0]), b.tensor_bytes(after[0]), spec, rank)
        if entry.l2 is not None and before is not None:
            summary.l2 += entry.l2**2
            norm = entry.l2 / entry.relative if entry.relative else 0.0
            summary._norm_sq += norm**2 if math.isfinite(norm) else 0.0
        results.append(entry)
    for summary in layers.values():
        summary.relative = math.sqrt(summary.l2 / summary._norm_sq) if summary._norm_sq else 0.0
        summary.l2 = math.sqrt(summary.l2)
    return ModelDiff(
        f"{a.model}@{a.commit}", f"{b.model}@{b.commit}", results, list(layers.values()),
        _file_changes(a, b),
    )  # fmt: skip


def _models(repo: Repository) -> set[str]:
    from fmforge.models.refs import ModelRefs

    return set(repo.view(ModelRefs).models())


def _file_changes(a: CommitReader, b: CommitReader) -> dict[str, list[str]]:
    def blobs(reader: CommitReader) -> dict[str, str]:
        return {f["path"]: f["object"] for f in reader.manifest["files"] if f["kind"] == "blob"}

    old, new = blobs(a), blobs(b)
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(p for p in set(old) & set(new) if old[p] != new[p]),
    }


_NUMERIC = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
    "U64": np.uint64, "BOOL": np.bool_, "BF16": np.uint16,  # bf16: widened below
}  # fmt: skip


def _values(raw: bytes | memoryview, spec: TensorSpec) -> np.ndarray[Any, Any] | None:
    """A view of the elements in a numpy dtype, or None (fp8: no numeric reading here)."""
    dtype = _NUMERIC.get(spec.dtype)
    return None if dtype is None else np.frombuffer(raw, dtype)


def _float64(values: np.ndarray[Any, Any], spec: TensorSpec) -> np.ndarray[Any, Any]:
    if spec.dtype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return values.astype(np.float64)


def _statistics(
    entry: TensorDiff,
    old_raw: bytes | memoryview,
    new_raw: bytes | memoryview,
    spec: TensorSpec,
    with_rank: bool,
) -> None:
    """Fill ``entry``'s statistics, in float64 chunks of rows (memory ~ the two tensors)."""
    old_bits = np.frombuffer(old_raw, np.uint8).reshape(spec.words, spec.itemsize)
    new_bits = np.frombuffer(new_raw, np.uint8).reshape(spec.words, spec.itemsize)
    changed = int(np.count_nonzero((old_bits != new_bits).any(axis=1)))  # bytes, for F4/F6
    entry.fraction_changed = changed / spec.words if spec.words else 0.0
    old_values, new_values = _values(old_raw, spec), _values(new_raw, spec)
    if old_values is None or new_values is None:
        return
    matrix = len(spec.shape) == 2 and 1 < min(spec.shape) <= _MAX_RANK_SIDE and with_rank
    old_m, new_m = old_values.reshape(-1, 1), new_values.reshape(-1, 1)
    if matrix:  # walk the matrix tall side first, so the Gram matrix is the small one
        old_m, new_m = old_values.reshape(spec.shape), new_values.reshape(spec.shape)
        if spec.shape[1] > spec.shape[0]:
            old_m, new_m = old_m.T, new_m.T
    cols = old_m.shape[1]
    gram = np.zeros((cols, cols)) if matrix else None
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // cols)
    sums = np.zeros(4)  # |d|^2, |old|^2, |new|^2, old.new
    max_abs = 0.0
    with np.errstate(all="ignore"):
        for start in range(0, old_m.shape[0], rows_per_chunk):
            stop = start + rows_per_chunk
            old = _float64(old_m[start:stop], spec).reshape(-1)
            new = _float64(new_m[start:stop], spec).reshape(-1)
            delta = new - old
            sums += (delta @ delta, old @ old, new @ new, old @ new)
            max_abs = max(max_abs, float(np.max(np.abs(delta), initial=0.0)))
            if gram is not None:
                block = delta.reshape(-1, cols)
                gram += block.T @ block
        l2, norm_old, norm_new = (float(np.sqrt(x)) for x in sums[:3])
        entry.l2, entry.max_abs = l2, max_abs
        entry.relative = l2 / norm_old if norm_old else math.inf
        entry.cosine = float(sums[3]) / (norm_old * norm_new) if norm_old and norm_new else None
        if gram is not None and np.isfinite(gram).all():
            entry.rank = _energy_rank(gram)
    for name in ("l2", "relative", "max_abs", "cosine"):  # JSON has no NaN/Inf
        value = getattr(entry, name)
        if value is not None and not math.isfinite(value):
            setattr(entry, name, None)


def _energy_rank(gram: np.ndarray[Any, Any]) -> int:
    """Smallest k whose top-k singular values hold 99% of the delta's squared norm.

    ``gram`` is ``D^T D``: its eigenvalues are the squared singular values of D.
    """
    energy = np.sort(np.clip(np.linalg.eigvalsh(gram), 0, None))[::-1]
    total = energy.sum()
    if total == 0:
        return 0
    return min(int(np.searchsorted(np.cumsum(energy) / total, _ENERGY)) + 1, int(energy.size))
