"""``lowrank``: factors ``U`` (m x r) and ``V`` (r x n) of the delta (a merged LoRA), plus the
``diff`` of the true bits against ``parent + U @ V``.

The approximation is computed with IEEE-754 elementwise operations in a fixed order (float64
outer products summed rank by rank), so every machine gets the same bits, and the residual makes
the result exact whatever they are. Payload: ``<IB`` (rank, 1 when the factors are stored as
bfloat16), then the packed blocks ``U``, ``V`` and the residual's byte planes.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import ClassVar

import numpy as np

from fmforge.errors import InvalidTensor
from fmforge.tensors.encodings.base import EncodedTensor, Kind, SelectiveEncoding, Words
from fmforge.tensors.encodings.diff import undo_zigzag_diff, zigzag_diff
from fmforge.tensors.encodings.planes import UINT, decompress, pack, planes, unpack, unplanes
from fmforge.tensors.spec import ITEMSIZE, TensorSpec

FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
MAX_RANK = 64
_RANK_PROBE_ROWS = 128
_PROBE_RANK = 16  # first probe for ranks up to this; a wider one only when the first is unsure

Factors = tuple[Words, Words]


def as_float64(bits: Words, dtype: str) -> Words:
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(FLOATS[dtype]).astype(np.float64)


def from_float64(values: Words, dtype: str) -> Words:
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "BF16":
            f32 = values.astype(np.float32).view(np.uint32)
            rounding = ((f32 >> 16) & 1) + 0x7FFF  # round to nearest, ties to even
            return ((f32 + rounding) >> 16).astype(np.uint16)
        return values.astype(FLOATS[dtype]).view(UINT[ITEMSIZE[dtype]])


def approximate(parent: Words, u: Words, v: Words, spec: TensorSpec) -> Words:
    """Bits of ``parent + u @ v``, identical on every IEEE-754 machine (no BLAS, fixed order)."""
    rows, cols = spec.shape
    acc = as_float64(parent, spec.dtype).reshape(rows, cols)
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    term = np.empty_like(acc)
    for k in range(u.shape[1]):  # separate multiply and add: two roundings, no FMA, any machine
        np.multiply(u64[:, k, None], v64[None, k], out=term)
        acc += term
    return from_float64(acc.reshape(-1), spec.dtype)


def _factors(delta: Words, max_rank: int) -> Factors | None:
    """Float32 factors of ``delta`` when it is low rank plus rounding noise.

    The rank is where the singular values drop by a clear gap (>= 8x): a merged LoRA's delta is
    rank r plus the noise of rounding the merge to the tensor's dtype (large in bf16).
    """
    rows, cols = delta.shape
    sketch = min(max_rank + 8, rows, cols)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(delta @ rng.standard_normal((cols, sketch)))
    q, _ = np.linalg.qr(delta @ (delta.T @ q))  # one power iteration: rounding noise is large
    b = q.T @ delta
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    if s.size < 2 or s[0] == 0:
        return None
    gaps = s[:-1] / np.maximum(s[1:], s[0] * 1e-30)
    rank = int(np.argmax(gaps[:max_rank])) + 1
    if gaps[rank - 1] < 8:
        return None
    u = (q @ ub[:, :rank]) * s[:rank]
    return u.astype(np.float32), vt[:rank].astype(np.float32)


def _probe_rank(bits: Words, parent: Words, spec: TensorSpec) -> int:
    """The largest rank worth factorising for, when the delta on a sample of rows shows a
    clear gap in its singular values; 0 when it does not (full rank, or not finite).

    A rank-r delta stays rank <= r on any subset of rows, and a full-rank one does not drop to
    rank r there; a random sketch of those rows keeps the leading singular values. So the probe
    costs one small matrix product and a tiny SVD instead of a factorisation of the delta.
    """
    rows, cols = spec.shape
    picked = np.unique(np.linspace(0, rows - 1, min(rows, _RANK_PROBE_ROWS)).astype(np.int64))
    matrix_bits, matrix_parent = bits.reshape(rows, cols), parent.reshape(rows, cols)
    with np.errstate(all="ignore"):
        sample = as_float64(matrix_bits[picked].reshape(-1), spec.dtype) - as_float64(
            matrix_parent[picked].reshape(-1), spec.dtype
        )
        if not np.isfinite(sample).all():
            return 0
        sample = sample.reshape(picked.size, cols)
        for max_rank in (_PROBE_RANK, MAX_RANK):
            max_rank = min(max_rank, min(picked.size, cols) // 4)
            if max_rank < 1:
                return 0
            sketch = np.random.default_rng(0).standard_normal((cols, max_rank + 8))
            try:
                s = np.linalg.svd(sample @ sketch, compute_uv=False)
            except np.linalg.LinAlgError:
                return 0
            if s.size < 2 or s[0] == 0:
                return 0
            gaps = s[:-1] / np.maximum(s[1:], s[0] * 1e-30)
            if gaps[:max_rank].max() >= 8:
                return max_rank
            if s[-1] > 0.25 * s[0]:  # flat spectrum: full rank, no need for a wider sketch
                return 0
    return 0


def _bf16_round_trip(values: Words) -> Words:
    """``values`` (float32) rounded to bfloat16 and widened back to float32."""
    bf16 = from_float64(values.astype(np.float64), "BF16")
    return (bf16.astype(np.uint32) << 16).view(np.float32).reshape(values.shape)


class LowRank(SelectiveEncoding):
    name: ClassVar[Kind] = "lowrank"
    summary = "low-rank factors of the delta (a merged LoRA) plus an exact residual"

    def applies(self, spec: TensorSpec, changed: int) -> bool:
        return (
            spec.dtype in ("F16", "BF16", "F32", "F64")
            and len(spec.shape) == 2
            and min(spec.shape) >= 16
            and changed > 0
        )

    def encode(
        self, words: Words, parent: Words, spec: TensorSpec, changed: int
    ) -> EncodedTensor | None:
        if not self.applies(spec, changed):
            return None
        rows, cols = spec.shape
        max_rank = _probe_rank(words, parent, spec)  # a full-rank delta is never factorised
        if not max_rank:
            return None
        with np.errstate(all="ignore"):
            delta = (as_float64(words, spec.dtype) - as_float64(parent, spec.dtype)).reshape(
                rows, cols
            )
            # Float64 products of values beyond 1e150 overflow; such tensors are not weights.
            if not np.isfinite(delta).all() or np.abs(delta).max(initial=0.0) > 1e150:
                return None
            try:
                factors = _factors(delta, min(max_rank, min(rows, cols) // 4))
            except np.linalg.LinAlgError:
                return None
        if factors is None:
            return None
        u, v = factors
        # Factors of 16-bit tensors are stored as bfloat16: their rounding (2**-9 relative) is
        # far below the tensor's own last place, and it halves their size.
        half = spec.dtype in ("F16", "BF16")
        if half:
            u, v = _bf16_round_trip(u), _bf16_round_trip(v)
        residual = zigzag_diff(words, approximate(parent, u, v, spec))
        u_bytes, v_bytes = (
            (from_float64(u.astype(np.float64), "BF16").tobytes(),
             from_float64(v.astype(np.float64), "BF16").tobytes())
            if half
            else (u.tobytes(), v.tobytes())
        )  # fmt: skip
        header = struct.pack("<IB", u.shape[1], 1 if half else 0)
        parts = chain((u_bytes, v_bytes), planes(residual))
        return EncodedTensor(self.name, (header, *pack(parts)))

    def decode(self, payload: bytes | memoryview, spec: TensorSpec, parent: Words | None) -> Words:
        if parent is None:
            raise InvalidTensor("a lowrank encoding needs its parent tensor")
        rank, half = struct.unpack("<IB", payload[:5])
        u_block, v_block, *residual_planes = unpack(payload[5:], 2 + spec.itemsize)
        u_bytes, v_bytes = decompress(u_block), decompress(v_block)
        rows, cols = spec.shape

        def factor(raw: bytes, shape: tuple[int, int]) -> Words:
            if half:
                widened = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                return widened.view(np.float32).reshape(shape)
            return np.frombuffer(raw, dtype=np.float32).reshape(shape)

        u, v = factor(u_bytes, (rows, rank)), factor(v_bytes, (rank, cols))
        return undo_zigzag_diff(
            unplanes(residual_planes, spec.itemsize), approximate(parent, u, v, spec)
        )
