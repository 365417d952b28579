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
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
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
# Byte planes of weights hold few long matches: what compresses is their skewed byte histogram.
# Level 1 with a small hash table and min match 7 compresses them as well as level 3 (even a
# little better) at ~1/3 of its time; a match finder working harder finds nothing more.
_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    1, hash_log=10, min_match=7, write_content_size=True
)
_local = threading.local()
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
    """An encoding: its kind and its payload, kept in parts so large ones are never joined
    in memory (the object store writes the parts one after the other)."""

    kind: Kind
    parts: tuple[bytes | memoryview, ...]

    @property
    def payload(self) -> bytes | memoryview:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)


def _bits(data: bytes | bytearray | memoryview, spec: TensorSpec) -> np.ndarray[Any, Any]:
    if len(data) != spec.nbytes:
        raise InvalidTensor(
            f"{spec.dtype}{list(spec.shape)} needs {spec.nbytes} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=_UINT[spec.itemsize])


def _planes(bits: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
    """Byte planes, one at a time: plane k holds byte k of every element."""
    itemsize = bits.dtype.itemsize
    as_bytes = bits.view(np.uint8).reshape(-1, itemsize)
    for k in range(itemsize):
        yield np.ascontiguousarray(as_bytes[:, k])


def _unplanes(blocks: Sequence[memoryview], itemsize: int) -> np.ndarray[Any, Any]:
    """Elements from their compressed byte planes. Each plane is streamed through a buffer of
    ``_CHUNK`` bytes, so memory holds the result and little else."""
    if len(blocks) != itemsize:
        raise CorruptTensor(f"{len(blocks)} byte planes for {itemsize}-byte elements")
    sizes = {zstandard.frame_content_size(block) for block in blocks}
    if len(sizes) != 1 or min(sizes) < 0:
        raise CorruptTensor("byte planes disagree in length or do not record it")
    count = sizes.pop()
    out = np.empty((count, itemsize), dtype=np.uint8)
    decompressor = zstandard.ZstdDecompressor()
    buffer = np.empty(min(count, _CHUNK), dtype=np.uint8)
    for k, block in enumerate(blocks):
        with decompressor.stream_reader(block) as reader:
            for start in range(0, count, _CHUNK):
                view = memoryview(buffer.data)[: min(_CHUNK, count - start)]
                filled = 0
                while filled < len(view):
                    got = reader.readinto(view[filled:])
                    if not got:
                        raise CorruptTensor("a byte plane ends early")
                    filled += got
                out[start : start + len(view), k] = buffer[: len(view)]
    return out.reshape(-1).view(_UINT[itemsize])


_CHUNK = 1 << 20  # elements per step of the elementwise passes: temporaries stay small


def _zigzag_diff(child: np.ndarray[Any, Any], base: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``child - base`` modulo 2**bits, zigzag-mapped so small steps either way stay small."""
    out = np.empty_like(child)
    top = child.dtype.type(child.dtype.itemsize * 8 - 1)
    one, zero = child.dtype.type(1), child.dtype.type(0)
    for start in range(0, child.size, _CHUNK):
        diff = out[start : start + _CHUNK]
        np.subtract(child[start : start + _CHUNK], base[start : start + _CHUNK], out=diff)
        sign = diff >> top
        np.subtract(zero, sign, out=sign)  # all ones where the difference is negative
        diff <<= one
        diff ^= sign
    return out


def _undo_zigzag_diff(
    zigzag: np.ndarray[Any, Any], base: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Inverse of ``_zigzag_diff``, in place in ``zigzag`` when it is writable."""
    out = zigzag if zigzag.flags.writeable else zigzag.copy()
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for start in range(0, out.size, _CHUNK):
        chunk = out[start : start + _CHUNK]
        sign = chunk & one
        np.subtract(zero, sign, out=sign)
        chunk >>= one
        chunk ^= sign
        chunk += base[start : start + _CHUNK]
    return out


def _compressor() -> zstandard.ZstdCompressor:
    """One per thread (a compressor is not safe to share between threads)."""
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(compression_params=_PARAMS)
    return compressor


def _pack(parts: Iterable[Any]) -> tuple[bytes, ...]:
    """Each part (bytes or a contiguous array) compressed alone, behind a table of sizes."""
    compressor = _compressor()
    blocks = [compressor.compress(p) for p in parts]
    return (struct.pack(f"<{len(blocks)}Q", *map(len, blocks)), *blocks)


def _unpack(payload: bytes | memoryview, count: int) -> list[memoryview]:
    """The ``count`` compressed blocks behind the table of sizes (not yet decompressed)."""
    view = memoryview(payload)
    head = 8 * count
    sizes = struct.unpack(f"<{count}Q", view[:head])
    blocks, offset = [], head
    for size in sizes:
        blocks.append(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise CorruptTensor("payload length does not match its block table")
    return blocks


def _pack_dense(
    kind: Kind, bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any]
) -> tuple[bytes, ...]:
    """``_pack(_planes(_dense(...)))`` computed ``_CHUNK`` elements at a time: each plane goes
    through its own streaming compressor, so no full-size temporary is ever allocated."""
    if bits.size <= _CHUNK:
        return _pack(_planes(_dense(kind, bits, parent_bits)))
    itemsize = bits.dtype.itemsize
    streams = [
        zstandard.ZstdCompressor(compression_params=_PARAMS).compressobj(size=bits.size)
        for _ in range(itemsize)
    ]
    pieces: list[list[bytes]] = [[] for _ in range(itemsize)]
    for start in range(0, bits.size, _CHUNK):
        stop = start + _CHUNK
        chunk = _dense(kind, bits[start:stop], parent_bits[start:stop])
        for k, plane in enumerate(_planes(chunk)):
            pieces[k].append(streams[k].compress(plane.data))
    for k in range(itemsize):
        pieces[k].append(streams[k].flush())
    table = struct.pack(f"<{itemsize}Q", *(sum(map(len, p)) for p in pieces))
    return (table, *(piece for plane in pieces for piece in plane if piece))


def _decompress(block: memoryview) -> bytes:
    data: bytes = zstandard.ZstdDecompressor().decompress(block)
    return data


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
    term = np.empty_like(acc)
    for k in range(u.shape[1]):  # separate multiply and add: two roundings, no FMA, any machine
        np.multiply(u64[:, k, None], v64[None, k], out=term)
        acc += term
    return _from_float64(acc.reshape(-1), spec.dtype)


Factors = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]


def _low_rank_factors(delta: np.ndarray[Any, Any], max_rank: int) -> Factors | None:
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


# ---- encode / decode ------------------------------------------------------------------------

_SAMPLE_CHUNKS = 8  # the dense encodings are compared on this many slices of the tensor ...
_SAMPLE_CHUNK = 4096  # ... of this many elements each, and only the winner is run in full
_RANK_PROBE_ROWS = 128
_PROBE_RANK = 16  # first probe for ranks up to this; a wider one only when the first is unsure


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
    bits = _bits(data, spec)
    if parent is None:
        if "raw" not in kinds and kinds != KINDS:
            raise InvalidTensor(f"none of the encodings {kinds} applies without a parent")
        return EncodedTensor("raw", _pack(_planes(bits)))
    parent_bits = _bits(parent, spec)
    candidates: list[EncodedTensor] = []
    changed = int(np.count_nonzero(bits != parent_bits))
    if "sparse" in kinds and changed <= _SPARSE_MAX_FRACTION * max(bits.size, 1):
        candidates.append(_encode_sparse(bits, parent_bits))
    if "lowrank" in kinds and _low_rank_applies(spec, changed):
        lowrank = _encode_low_rank(bits, parent_bits, spec)
        if lowrank is not None:
            candidates.append(lowrank)
    dense: list[Kind] = [k for k in ("raw", "xor", "diff") if k in kinds]
    best_so_far = min((c.size for c in candidates), default=None)
    # A sparse or low-rank encoding under 1/8 of the tensor is not beaten by a dense one.
    if dense and (best_so_far is None or best_so_far > spec.nbytes // 8):
        if bits.size <= _SAMPLE_CHUNKS * _SAMPLE_CHUNK:  # small: the sample is the tensor
            candidates += [EncodedTensor(k, _pack_dense(k, bits, parent_bits)) for k in dense]
        else:
            kind, estimate = _best_dense_kind(bits, parent_bits, dense)
            if best_so_far is None or estimate < best_so_far:
                candidates.append(EncodedTensor(kind, _pack_dense(kind, bits, parent_bits)))
    if not candidates:
        raise InvalidTensor(f"none of the encodings {kinds} applies to this tensor")
    return min(candidates, key=lambda c: c.size)


def _dense(
    kind: Kind, bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    if kind == "raw":
        return bits
    if kind == "xor":
        return bits ^ parent_bits  # type: ignore[no-any-return]
    with np.errstate(over="ignore"):
        return _zigzag_diff(bits, parent_bits)


def _best_dense_kind(
    bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any], kinds: Sequence[Kind]
) -> tuple[Kind, float]:
    """The dense encoding that compresses a sample best, and its size scaled to the tensor."""
    if len(kinds) == 1:
        return kinds[0], 0.0
    starts = np.linspace(0, bits.size - _SAMPLE_CHUNK, _SAMPLE_CHUNKS).astype(np.int64)
    picked = (starts[:, None] + np.arange(_SAMPLE_CHUNK)).reshape(-1)
    child, base = bits[picked], parent_bits[picked]

    estimates = {k: sum(map(len, _pack(_planes(_dense(k, child, base))))) for k in kinds}
    best = min(kinds, key=estimates.__getitem__)
    return best, estimates[best] * bits.size / max(picked.size, 1)


def _encode_sparse(bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any]) -> EncodedTensor:
    """Gaps between changed positions, then the changed values as zigzag differences."""
    changed = np.flatnonzero(bits != parent_bits)
    gaps = np.diff(changed, prepend=-1).astype(np.uint64)
    wide = bool(gaps.size) and int(gaps.max()) > 0xFFFFFFFF
    gaps = gaps if wide else gaps.astype(np.uint32)
    with np.errstate(over="ignore"):
        values = _zigzag_diff(bits[changed], parent_bits[changed])
    header = struct.pack("<QB", changed.size, 8 if wide else 4)
    return EncodedTensor("sparse", (header, *_pack(chain(_planes(gaps), _planes(values)))))


def _low_rank_applies(spec: TensorSpec, changed: int) -> bool:
    return (
        spec.dtype in ("F16", "BF16", "F32", "F64")
        and len(spec.shape) == 2
        and min(spec.shape) >= 16
        and changed > 0
    )


def _probe_rank(
    bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any], spec: TensorSpec
) -> int:
    """The largest rank worth factorising for, when the delta on a sample of rows shows a
    clear gap in its singular values; 0 when it does not (full rank, or not finite).

    A rank-r delta stays rank <= r on any subset of rows, and a full-rank one does not drop to
    rank r there; a random sketch of those rows keeps the leading singular values. So the probe
    costs one small matrix product and a tiny SVD instead of a factorisation of the delta.
    """
    rows, cols = spec.shape
    picked = np.unique(np.linspace(0, rows - 1, min(rows, _RANK_PROBE_ROWS)).astype(np.int64))
    matrix_bits, matrix_parent = bits.reshape(rows, cols), parent_bits.reshape(rows, cols)
    with np.errstate(all="ignore"):
        sample = _as_float64(matrix_bits[picked].reshape(-1), spec.dtype) - _as_float64(
            matrix_parent[picked].reshape(-1), spec.dtype
        )
        if not np.isfinite(sample).all():
            return 0
        sample = sample.reshape(picked.size, cols)
        for max_rank in (_PROBE_RANK, _MAX_RANK):
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


def _encode_low_rank(
    bits: np.ndarray[Any, Any], parent_bits: np.ndarray[Any, Any], spec: TensorSpec
) -> EncodedTensor | None:
    rows, cols = spec.shape
    max_rank = _probe_rank(bits, parent_bits, spec)  # a full-rank delta is never factorised
    if not max_rank:
        return None
    with np.errstate(all="ignore"):
        delta = (_as_float64(bits, spec.dtype) - _as_float64(parent_bits, spec.dtype)).reshape(
            rows, cols
        )
        # Float64 products of values beyond 1e150 overflow; such tensors are not weights.
        if not np.isfinite(delta).all() or np.abs(delta).max(initial=0.0) > 1e150:
            return None
        try:
            factors = _low_rank_factors(delta, min(max_rank, min(rows, cols) // 4))
            if factors is None:
                return None
            u, v = factors
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
    parts = chain((u_bytes, v_bytes), _planes(residual))
    return EncodedTensor("lowrank", (header, *_pack(parts)))


def _bf16_round_trip(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``values`` (float32) rounded to bfloat16 and widened back to float32."""
    bf16 = _from_float64(values.astype(np.float64), "BF16")
    return (bf16.astype(np.uint32) << 16).view(np.float32).reshape(values.shape)


def decode(
    encoded: EncodedTensor,
    spec: TensorSpec,
    parent: bytes | bytearray | memoryview | None = None,
) -> memoryview:
    """The tensor's exact bytes. Deltas need the same ``parent`` they were encoded against."""
    itemsize = spec.itemsize
    try:
        if encoded.kind == "raw":
            out = _unplanes(_unpack(encoded.payload, itemsize), itemsize)
        else:
            if parent is None:
                raise InvalidTensor(f"a {encoded.kind} encoding needs its parent tensor")
            parent_bits = _bits(parent, spec)
            if encoded.kind == "xor":
                out = _unplanes(_unpack(encoded.payload, itemsize), itemsize)
                out ^= parent_bits
            elif encoded.kind == "diff":
                planes = _unplanes(_unpack(encoded.payload, itemsize), itemsize)
                with np.errstate(over="ignore"):
                    out = _undo_zigzag_diff(planes, parent_bits)
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
    return memoryview(out.data).cast("B")  # no copy: the caller hashes or writes it


def _decode_sparse(
    payload: bytes | memoryview, parent_bits: np.ndarray[Any, Any], itemsize: int
) -> np.ndarray[Any, Any]:
    count, gap_width = struct.unpack("<QB", payload[:9])
    if gap_width not in (4, 8):
        raise CorruptTensor(f"sparse payload has gap width {gap_width}")
    parts = _unpack(payload[9:], gap_width + itemsize)
    positions = np.cumsum(_unplanes(parts[:gap_width], gap_width).astype(np.int64)) - 1
    values = _unplanes(parts[gap_width:], itemsize)
    if positions.size != count or values.size != count:
        raise CorruptTensor("sparse payload counts disagree")
    if count and (positions[0] < 0 or positions[-1] >= parent_bits.size):
        raise CorruptTensor("sparse payload points outside the tensor")
    out = parent_bits.copy()
    with np.errstate(over="ignore"):
        out[positions] = _undo_zigzag_diff(values, parent_bits[positions])
    return out


def _decode_low_rank(
    payload: bytes | memoryview, parent_bits: np.ndarray[Any, Any], spec: TensorSpec
) -> np.ndarray[Any, Any]:
    rank, half = struct.unpack("<IB", payload[:5])
    u_block, v_block, *residual_planes = _unpack(payload[5:], 2 + spec.itemsize)
    u_bytes, v_bytes = _decompress(u_block), _decompress(v_block)
    rows, cols = spec.shape

    def factor(raw: bytes, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
        if half:
            widened = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return widened.view(np.float32).reshape(shape)
        return np.frombuffer(raw, dtype=np.float32).reshape(shape)

    u, v = factor(u_bytes, (rows, rank)), factor(v_bytes, (rank, cols))
    with np.errstate(over="ignore"):
        return _undo_zigzag_diff(
            _unplanes(residual_planes, spec.itemsize), _approximate(parent_bits, u, v, spec)
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
