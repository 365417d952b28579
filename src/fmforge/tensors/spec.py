"""A tensor's dtype and shape, and the sizes that follow from them.

The dtypes are those of the safetensors format (``safetensors/src/tensor.rs``), each with its
width in bits. Most are whole bytes; ``F4`` and the two ``F6`` formats pack several elements
into a byte, so a tensor of them is valid only when its elements end on a byte boundary. The
encodings see every tensor as a flat array of *words*: elements for whole-byte dtypes, bytes
for the packed ones. Sizes are exact Python integers; the limits of the safetensors reader
(64-bit, overflow-checked) are applied where headers are parsed (``tensors.layout``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmforge.errors import InvalidTensor

# Bits per element of every safetensors dtype, in the reference implementation's order.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip

# Bytes per element of the whole-byte dtypes.
ITEMSIZE: dict[str, int] = {d: bits // 8 for d, bits in DTYPE_BITS.items() if bits % 8 == 0}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BITS:
            raise InvalidTensor(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPE_BITS)}")
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in self.shape):
            raise InvalidTensor(f"shape {list(self.shape)} is not a list of sizes >= 0")
        if self.numel * DTYPE_BITS[self.dtype] % 8:
            raise InvalidTensor(
                f"{self.dtype}{list(self.shape)} does not end on a byte boundary "
                f"({self.numel} elements of {DTYPE_BITS[self.dtype]} bits)"
            )

    @property
    def bits(self) -> int:
        """Bits per element."""
        return DTYPE_BITS[self.dtype]

    @property
    def itemsize(self) -> int:
        """Bytes per word: the element size, or 1 for the packed sub-byte dtypes."""
        return max(1, DTYPE_BITS[self.dtype] // 8)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BITS[self.dtype] // 8

    @property
    def words(self) -> int:
        """Words the encodings work on: ``nbytes // itemsize``."""
        return self.nbytes // self.itemsize
