"""Lossless encodings of a tensor, alone or against a parent version of it.

Every encoding works on the tensor's raw little-endian bytes and gives them back bit for bit.
The encodings live one per module in ``fmforge.tensors.encodings`` and are listed here, in
``ENCODINGS``, keyed by the short name stored with each encoded tensor:

- ``raw``: the bytes, byte-grouped and zstd-compressed (no parent needed).
- ``xor``: the bitwise XOR with the parent, byte-grouped and compressed.
- ``diff``: the zigzag-mapped integer difference with the parent, byte-grouped and compressed.
- ``sparse``: positions and values of the few elements that changed.
- ``lowrank``: low-rank factors of the delta (a merged LoRA) plus an exact residual.

``encode`` tries the encodings that apply and keeps the smallest; ``decode`` reverses any of
them. Payload formats never change: a stored tensor decodes the same under every version
(``tests/unit/tensors/golden_encodings.json`` holds payloads written by earlier ones).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np
import zstandard

from fmforge.errors import CorruptTensor, InvalidTensor
from fmforge.tensors.encodings.base import (
    DenseEncoding,
    EncodedTensor,
    Encoding,
    Kind,
    SelectiveEncoding,
    Words,
)
from fmforge.tensors.encodings.diff import Diff
from fmforge.tensors.encodings.lowrank import LowRank
from fmforge.tensors.encodings.planes import UINT, pack, planes
from fmforge.tensors.encodings.raw import Raw
from fmforge.tensors.encodings.sparse import Sparse
from fmforge.tensors.encodings.xor import Xor
from fmforge.tensors.spec import DTYPE_BITS, ITEMSIZE, TensorSpec

__all__ = [
    "DTYPE_BITS",
    "ENCODINGS",
    "ITEMSIZE",
    "KINDS",
    "EncodedTensor",
    "Encoding",
    "Kind",
    "TensorSpec",
    "decode",
    "encode",
    "encoded_sizes",
]

_RAW = Raw()
# The registry, in the order kinds are numbered in stored tensor objects: append, never reorder.
ENCODINGS: dict[Kind, Encoding] = {e.name: e for e in (_RAW, Xor(), Diff(), Sparse(), LowRank())}
KINDS: tuple[Kind, ...] = tuple(ENCODINGS)
_DENSE = {k: e for k, e in ENCODINGS.items() if isinstance(e, DenseEncoding)}
_SELECTIVE = {k: e for k, e in ENCODINGS.items() if isinstance(e, SelectiveEncoding)}

_SAMPLE_CHUNKS = 8  # the dense encodings are compared on this many slices of the tensor ...
_SAMPLE_CHUNK = 4096  # ... of this many elements each, and only the winner is run in full


def _words(data: bytes | bytearray | memoryview, spec: TensorSpec) -> Words:
    if len(data) != spec.nbytes:
        raise InvalidTensor(
            f"{spec.dtype}{list(spec.shape)} needs {spec.nbytes} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=UINT[spec.itemsize])


def encode(
    data: bytes | bytearray | memoryview,
    spec: TensorSpec,
    parent: bytes | bytearray | memoryview | None = None,
    *,
    kinds: Iterable[Kind] = KINDS,
) -> EncodedTensor:
    """A small lossless encoding of ``data`` (against ``parent`` if given).

    Sparse and low-rank are tried when they can apply (few changed entries; a rank probe on a
    sample of rows finds a gap in the singular values). The dense encodings (raw, xor, diff) are
    compared on a sample and only the best one runs on the whole tensor, so encoding costs about
    one pass of compression, not one per candidate.
    """
    kinds = tuple(kinds)
    words = _words(data, spec)
    if parent is None:
        if "raw" not in kinds and kinds != KINDS:
            raise InvalidTensor(f"none of the encodings {kinds} applies without a parent")
        return _RAW.alone(words)
    parent_words = _words(parent, spec)
    candidates: list[EncodedTensor] = []
    changed = int(np.count_nonzero(words != parent_words))
    for kind, selective in _SELECTIVE.items():  # registry order: sparse, then low-rank
        found = selective.encode(words, parent_words, spec, changed) if kind in kinds else None
        if found is not None:
            candidates.append(found)
    dense = [k for k in _DENSE if k in kinds]
    best_so_far = min((c.size for c in candidates), default=None)
    # A sparse or low-rank encoding under 1/8 of the tensor is not beaten by a dense one.
    if dense and (best_so_far is None or best_so_far > spec.nbytes // 8):
        if words.size <= _SAMPLE_CHUNKS * _SAMPLE_CHUNK:  # small: the sample is the tensor
            candidates += [_DENSE[k].encode(words, parent_words) for k in dense]
        else:
            kind, estimate = _best_dense_kind(words, parent_words, dense)
            if best_so_far is None or estimate < best_so_far:
                candidates.append(_DENSE[kind].encode(words, parent_words))
    if not candidates:
        raise InvalidTensor(f"none of the encodings {kinds} applies to this tensor")
    return min(candidates, key=lambda c: c.size)


def _best_dense_kind(words: Words, parent: Words, kinds: Sequence[Kind]) -> tuple[Kind, float]:
    """The dense encoding that compresses a sample best, and its size scaled to the tensor."""
    if len(kinds) == 1:
        return kinds[0], 0.0
    starts = np.linspace(0, words.size - _SAMPLE_CHUNK, _SAMPLE_CHUNKS).astype(np.int64)
    picked = (starts[:, None] + np.arange(_SAMPLE_CHUNK)).reshape(-1)
    child, base = words[picked], parent[picked]
    estimates = {k: sum(map(len, pack(planes(_DENSE[k].transform(child, base))))) for k in kinds}
    best = min(kinds, key=estimates.__getitem__)
    return best, estimates[best] * words.size / max(picked.size, 1)


def decode(
    encoded: EncodedTensor,
    spec: TensorSpec,
    parent: bytes | bytearray | memoryview | None = None,
) -> memoryview:
    """The tensor's exact bytes. Deltas need the same ``parent`` they were encoded against."""
    encoding = ENCODINGS.get(encoded.kind)
    if encoding is None:
        raise CorruptTensor(f"unknown encoding {encoded.kind!r}")
    try:
        if encoding.needs_parent and parent is None:
            raise InvalidTensor(f"a {encoded.kind} encoding needs its parent tensor")
        parent_words = None if parent is None or not encoding.needs_parent else _words(parent, spec)
        out = encoding.decode(encoded.payload, spec, parent_words)
    except (zstandard.ZstdError, ValueError, struct.error) as exc:
        raise CorruptTensor(f"cannot decode {encoded.kind} payload: {exc}") from None
    if out.size != spec.words:
        raise CorruptTensor(f"decoded {out.size} elements, expected {spec.words}")
    return memoryview(out.data).cast("B")  # no copy: the caller hashes or writes it


def encoded_sizes(
    data: bytes, spec: TensorSpec, parent: bytes | None, kinds: Sequence[Kind] = KINDS
) -> dict[str, int]:
    """Payload size of each applicable encoding (for diagnostics and benchmarks)."""
    sizes: dict[str, int] = {}
    for kind in kinds:
        try:
            sizes[kind] = encode(data, spec, parent, kinds=[kind]).size
        except InvalidTensor:
            continue
    return sizes
