"""Lossless encodings of a tensor, alone or against a parent version of it.

Every encoding works on the tensor's raw little-endian bytes and gives them back bit for bit:

- ``raw``: the bytes, byte-grouped (all first bytes of each element, then all second bytes, ...),
  zstd-compressed. Grouping puts the slowly varying sign/exponent bytes of floats together.
- ``xor``: the bitwise XOR with the parent, byte-grouped and compressed. A small update leaves
  the high bytes of most elements unchanged, so their XOR planes are runs of zeros.
- ``diff``: the wrapping integer difference of the bit patterns, zigzag-mapped (0, -1, 1, -2 ...
  become 0, 1, 2, 3 ...), byte-grouped and compressed. Where elements moved by a few units in
  the last place, XOR flips every bit a carry crossed; the difference stays tiny.
- ``sparse``: positions of the elements that changed (gaps, compressed) and their XOR values;
  for updates that touch a few percent of the entries.
- ``lowrank``: factors ``U`` (m x r) and ``V`` (r x n) of the delta (a merged LoRA), plus the
  ``diff`` of the true bits against ``parent + U @ V``. The approximation is computed with IEEE-754
  elementwise operations in a fixed order (float64 outer products summed rank by rank), so every
  machine gets the same bits, and the residual makes the result exact whatever they are.

``encode`` tries the encodings that apply and keeps the smallest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zstandard

from fmforge.errors import CorruptTensor, InvalidTensor

Kind = Literal["raw", "xor", "diff", "sparse", "lowrank"]
KINDS: tuple[Kind, ...] = ("raw", "xor", "diff", "sparse", "lowrank")

# Bytes per element of every safetensors dtype.
ITEMSIZE: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_FLOAT = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_LEVEL = 3
_MAX_RANK = 64
_SPARSE_MAX_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in ITEMSIZE:
            raise InvalidTensor(f"unknown dtype {self.dtype!r}; known: {', '.join(ITEMSIZE)}")
        if any(d < 0 for d in self.shape):
            raise InvalidTensor(f"negative dimension in shape {self.shape}")

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True, slots=True)
class EncodedTensor:
    kind: Kind
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload)


def _bits(data: bytes | bytearray | memoryview, spec: TensorSpec) -> np.ndarray[Any, Any]:
    if len(data) != spec.nbytes:
        raise InvalidTensor(
            f"{spec.dtype}{list(spec.shape)} needs {spec.nbytes} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=_UINT[spec.itemsize])


def _group(bits: np.ndarray[Any, Any]) -> bytes:
    """Byte-group: plane k holds byte k of every element."""
    itemsize = bits.dtype.itemsize
    if itemsize == 1:
        return bits.tobytes()
    return np.ascontiguousarray(bits.view(np.uint8).reshape(-1, itemsize).T).tobytes()


def _ungroup(planes: bytes, itemsize: int) -> np.ndarray[Any, Any]:
    flat = np.frombuffer(planes, dtype=np.uint8)
    if itemsize == 1:
        return flat
    return np.ascontiguousarray(flat.reshape(itemsize, -1).T).view(_UINT[itemsize]).reshape(-1)


def _zigzag_diff(child: np.ndarray[Any, Any], base: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``child - base`` modulo 2**bits, zigzag-mapped so small steps either way stay small."""
    diff = child - base  # unsigned: wraps
    top = diff.dtype.type(diff.dtype.itemsize * 8 - 1)
    one = diff.dtype.type(1)
    return (diff << one) ^ (diff.dtype.type(0) - (diff >> top))  # type: ignore[no-any-return]


def _undo_zigzag_diff(
    zigzag: np.ndarray[Any, Any], base: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    one = zigzag.dtype.type(1)
    diff = (zigzag >> one) ^ (zigzag.dtype.type(0) - (zigzag & one))
    return base + diff  # type: ignore[no-any-return]


def _pack(*parts: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(level=_LEVEL)
    blocks = [compressor.compress(p) for p in parts]
    return struct.pack(f"<{len(blocks)}Q", *map(len, blocks)) + b"".join(blocks)


def _unpack(payload: bytes, count: int) -> list[bytes]:
    head = 8 * count
    sizes = struct.unpack(f"<{count}Q", payload[:head])
    decompressor = zstandard.ZstdDecompressor()
    parts, offset = [], head
    for size in sizes:
        parts.append(decompressor.decompress(payload[offset : offset + size]))
        offset += size
    if offset != len(payload):
        raise CorruptTensor("payload length does not match its block table")
    return parts


# ---- low-rank approximation -----------------------------------------------------------------


def _as_float64(bits: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(_FLOAT[dtype]).astype(np.float64)


def _from_float64(values: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "BF16":
            f32 = values.astype(np.float32).view(np.uint32)
            rounding = ((f32 >> 16) & 1) + 0x7FFF  # round to nearest, ties to even
            return ((f32 + rounding) >> 16).astype(np.uint16)
        return values.astype(_FLOAT[dtype]).view(_UINT[ITEMSIZE[dtype]])


def _approximate(
    parent_bits: np.ndarray[Any, Any],
    u: np.ndarray[Any, Any],
    v: np.ndarray[Any, Any],
    spec: TensorSpec,
) -> np.ndarray[Any, Any]:
    """Bits of ``parent + u @ v``, identical on every IEEE-754 machine (no BLAS, fixed order)."""
    rows, cols = spec.shape
    acc = _as_float64(parent_bits, spec.dtype).reshape(rows, cols)
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    for k in range(u.shape[1]):
        acc += np.multiply.outer(u64[:, k], v64[k])
    return _from_float64(acc.reshape(-1), spec.dtype)


def _low_rank_factors(
    delta: np.ndarray[Any, Any], max_rank: int, *, fixed_rank: bool = False
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Float32 factors of ``delta`` when it is low rank plus rounding noise.

    The rank is where the singular values drop by a clear gap (>= 8x): a merged LoRA's delta is
    rank r plus the noise of rounding the merge to the tensor's dtype (large in bf16).
    """
    rows, cols = delta.shape
    sketch = min(max_rank + 8, rows, cols)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(delta @ rng.standard_normal((cols, sketch)))
    b = q.T @ delta
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    if s.size < 2 or s[0] == 0:
        return None
    if fixed_rank:
        rank = min(max_rank, s.size)
    else:
        gaps = s[:-1] / np.maximum(s[1:], s[0] * 1e-30)
        rank = int(np.argmax(gaps[:max_rank])) + 1
        if gaps[rank - 1] < 8:
            return None
    u = (q @ ub[:, :rank]) * s[:rank]
    return u.astype(np.float32), vt[:rank].astype(np.float32)


def _refine(
    factors: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    bits: np.ndarray[Any, Any],
    parent_bits: np.ndarray[Any, Any],
    spec: TensorSpec,
    iterations: int = 4,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Pull ``parent + U @ V`` into each element's rounding interval (alternating projections).

    The SVD fits the merge's rounding noise too; what decoding needs is that ``parent + U @ V``
    rounds to the stored value. Clipping the fit into the intervals and re-fitting the rank
    moves it there, so the residual becomes mostly zeros. Encoder-only, so BLAS is fine here.
    """
    rows, cols = spec.shape
    u, v = factors
    rank = u.shape[1]
    with np.errstate(all="ignore"):
        parent = _as_float64(parent_bits, spec.dtype)
        value = _as_float64(bits, spec.dtype)
        one = bits.dtype.type(1)
        below = _as_float64(bits - one, spec.dtype)
        above = _as_float64(bits + one, spec.dtype)
        lo = np.minimum((value + below) / 2, (value + above) / 2) - parent
        hi = np.maximum((value + below) / 2, (value + above) / 2) - parent
        usable = np.isfinite(lo) & np.isfinite(hi)
        lo, hi = lo.reshape(rows, cols), hi.reshape(rows, cols)
        usable = usable.reshape(rows, cols)
        best = (u, v)
        best_misses = _misses(u, v, bits, parent_bits, spec)
        for _ in range(iterations):
            fit = u.astype(np.float64) @ v.astype(np.float64)
            target = np.where(usable, np.clip(fit, lo, hi), fit)
            refit = _low_rank_factors(target, rank, fixed_rank=True)
            if refit is None:
                break
            u, v = refit
            misses = _misses(u, v, bits, parent_bits, spec)
            if misses < best_misses:
                best, best_misses = (u, v), misses
    return best


def _misses(
    u: np.ndarray[Any, Any],
    v: np.ndarray[Any, Any],
    bits: np.ndarray[Any, Any],
    parent_bits: np.ndarray[Any, Any],
    spec: TensorSpec,
) -> int:
    return int(np.count_nonzero(_approximate(parent_bits, u, v, spec) != bits))


# ---- encode / decode ------------------------------------------------------------------------


def encode(
    data: bytes | bytearray | memoryview,
    spec: TensorSpec,
    parent: bytes | bytearray | memoryview | None = None,
    *,
    kinds: Iterable[Kind] = KINDS,
) -> EncodedTensor:
    """The smallest of the applicable encodings of ``data`` (against ``parent`` if given)."""
    kinds = tuple(kinds)
    bits = _bits(data, spec)
    candidates: list[EncodedTensor] = []
    if "raw" in kinds or parent is None:
        candidates.append(EncodedTensor("raw", _pack(_group(bits))))
    if parent is not None:
        parent_bits = _bits(parent, spec)
        xor = bits ^ parent_bits
        if "xor" in kinds:
            candidates.append(EncodedTensor("xor", _pack(_group(xor))))
        if "diff" in kinds:
            with np.errstate(over="ignore"):
                candidates.append(
                    EncodedTensor("diff", _pack(_group(_zigzag_diff(bits, parent_bits))))
                )
        changed = np.flatnonzero(xor)
        if "sparse" in kinds and changed.size <= _SPARSE_MAX_FRACTION * max(bits.size, 1):
            candidates.append(_encode_sparse(xor, changed))
        if "lowrank" in kinds and _low_rank_applies(spec, changed.size):
            lowrank = _encode_low_rank(bits, parent_bits, spec)
            if lowrank is not None:
                candidates.append(lowrank)
    if not candidates:
        raise InvalidTensor(f"none of the encodings {kinds} applies to this tensor")
    return min(candidates, key=lambda c: c.size)


def _encode_sparse(xor: np.ndarray[Any, Any], changed: np.ndarray[Any, Any]) -> EncodedTensor:
    gaps = np.diff(changed, prepend=-1).astype(np.uint64)
    wide = bool(gaps.size) and int(gaps.max()) > 0xFFFFFFFF
    gaps = gaps if wide else gaps.astype(np.uint32)
    header = struct.pack("<QB", changed.size, 8 if wide else 4)
    return EncodedTensor("sparse", header + _pack(_group(gaps), _group(xor[changed])))


def _low_rank_applies(spec: TensorSpec, changed: int) -> bool:
    return (
        spec.dtype in ("F16", "BF16", "F32", "F64")
        and len(spec.shape) == 2
        and min(spec.shape) >= 16
        and changed > 0
    )


def _encode_low_rank(
    bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any], spec: TensorSpec
) -> EncodedTensor | None:
    rows, cols = spec.shape
    with np.errstate(all="ignore"):
        delta = (_as_float64(bits, spec.dtype) - _as_float64(parent_bits, spec.dtype)).reshape(
            rows, cols
        )
        # Float64 products of values beyond 1e150 overflow; such tensors are not weights.
        if not np.isfinite(delta).all() or np.abs(delta).max(initial=0.0) > 1e150:
            return None
        try:
            factors = _low_rank_factors(delta, min(_MAX_RANK, min(rows, cols) // 4))
            if factors is None:
                return None
            u, v = _refine(factors, bits, parent_bits, spec)
        except np.linalg.LinAlgError:
            return None
    # Factors of 16-bit tensors are stored as bfloat16: their rounding (2**-9 relative) is far
    # below the tensor's own last place, and it halves their size.
    half = spec.dtype in ("F16", "BF16")
    if half:
        u, v = _bf16_round_trip(u), _bf16_round_trip(v)
    with np.errstate(over="ignore"):
        residual = _zigzag_diff(bits, _approximate(parent_bits, u, v, spec))
    u_bytes, v_bytes = (
        (_from_float64(u.astype(np.float64), "BF16").tobytes(),
         _from_float64(v.astype(np.float64), "BF16").tobytes())
        if half
        else (u.tobytes(), v.tobytes())
    )  # fmt: skip
    header = struct.pack("<IB", u.shape[1], 1 if half else 0)
    return EncodedTensor("lowrank", header + _pack(u_bytes, v_bytes, _group(residual)))


def _bf16_round_trip(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``values`` (float32) rounded to bfloat16 and widened back to float32."""
    bf16 = _from_float64(values.astype(np.float64), "BF16")
    return (bf16.astype(np.uint32) << 16).view(np.float32).reshape(values.shape)


def decode(
    encoded: EncodedTensor,
    spec: TensorSpec,
    parent: bytes | bytearray | memoryview | None = None,
) -> bytes:
    """The tensor's exact bytes. Deltas need the same ``parent`` they were encoded against."""
    itemsize = spec.itemsize
    try:
        if encoded.kind == "raw":
            (planes,) = _unpack(encoded.payload, 1)
            out = _ungroup(planes, itemsize)
        else:
            if parent is None:
                raise InvalidTensor(f"a {encoded.kind} encoding needs its parent tensor")
            parent_bits = _bits(parent, spec)
            if encoded.kind == "xor":
                (planes,) = _unpack(encoded.payload, 1)
                out = parent_bits ^ _ungroup(planes, itemsize)
            elif encoded.kind == "diff":
                (planes,) = _unpack(encoded.payload, 1)
                with np.errstate(over="ignore"):
                    out = _undo_zigzag_diff(_ungroup(planes, itemsize), parent_bits)
            elif encoded.kind == "sparse":
                out = _decode_sparse(encoded.payload, parent_bits, itemsize)
            elif encoded.kind == "lowrank":
                out = _decode_low_rank(encoded.payload, parent_bits, spec)
            else:
                raise CorruptTensor(f"unknown encoding {encoded.kind!r}")
    except (zstandard.ZstdError, ValueError, struct.error) as exc:
        raise CorruptTensor(f"cannot decode {encoded.kind} payload: {exc}") from None
    if out.size != spec.numel:
        raise CorruptTensor(f"decoded {out.size} elements, expected {spec.numel}")
    return out.tobytes()


def _decode_sparse(
    payload: bytes, parent_bits: np.ndarray[Any, Any], itemsize: int
) -> np.ndarray[Any, Any]:
    count, gap_width = struct.unpack("<QB", payload[:9])
    gap_planes, value_planes = _unpack(payload[9:], 2)
    positions = np.cumsum(_ungroup(gap_planes, gap_width).astype(np.int64)) - 1
    values = _ungroup(value_planes, itemsize)
    if positions.size != count or values.size != count:
        raise CorruptTensor("sparse payload counts disagree")
    out = parent_bits.copy()
    out[positions] ^= values
    return out


def _decode_low_rank(
    payload: bytes, parent_bits: np.ndarray[Any, Any], spec: TensorSpec
) -> np.ndarray[Any, Any]:
    rank, half = struct.unpack("<IB", payload[:5])
    u_bytes, v_bytes, residual_planes = _unpack(payload[5:], 3)
    rows, cols = spec.shape

    def factor(raw: bytes, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
        if half:
            widened = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return widened.view(np.float32).reshape(shape)
        return np.frombuffer(raw, dtype=np.float32).reshape(shape)

    u, v = factor(u_bytes, (rows, rank)), factor(v_bytes, (rank, cols))
    with np.errstate(over="ignore"):
        return _undo_zigzag_diff(
            _ungroup(residual_planes, spec.itemsize), _approximate(parent_bits, u, v, spec)
        )


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
