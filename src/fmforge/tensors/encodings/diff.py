"""``diff``: the wrapping integer difference of the bit patterns, zigzag-mapped (0, -1, 1, -2 ...
become 0, 1, 2, 3 ...), byte-grouped and compressed. Where elements moved by a few units in the
last place, XOR flips every bit a carry crossed; the difference stays tiny.

The zigzag difference is also how ``sparse`` stores changed values and ``lowrank`` its residual.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fmforge.errors import InvalidTensor
from fmforge.tensors.encodings.base import DenseEncoding, Kind, Words
from fmforge.tensors.encodings.planes import CHUNK


def zigzag_diff(child: Words, base: Words) -> Words:
    """``child - base`` modulo 2**bits, zigzag-mapped so small steps either way stay small."""
    out = np.empty_like(child)
    top = child.dtype.type(child.dtype.itemsize * 8 - 1)
    one, zero = child.dtype.type(1), child.dtype.type(0)
    with np.errstate(over="ignore"):
        for start in range(0, child.size, CHUNK):
            diff = out[start : start + CHUNK]
            np.subtract(child[start : start + CHUNK], base[start : start + CHUNK], out=diff)
            sign = diff >> top
            np.subtract(zero, sign, out=sign)  # all ones where the difference is negative
            diff <<= one
            diff ^= sign
    return out


def undo_zigzag_diff(zigzag: Words, base: Words) -> Words:
    """Inverse of ``zigzag_diff``, in place in ``zigzag`` when it is writable."""
    out = zigzag if zigzag.flags.writeable else zigzag.copy()
    one, zero = out.dtype.type(1), out.dtype.type(0)
    with np.errstate(over="ignore"):
        for start in range(0, out.size, CHUNK):
            chunk = out[start : start + CHUNK]
            sign = chunk & one
            np.subtract(zero, sign, out=sign)
            chunk >>= one
            chunk ^= sign
            chunk += base[start : start + CHUNK]
    return out


class Diff(DenseEncoding):
    name: ClassVar[Kind] = "diff"
    summary = "zigzag-mapped integer difference with the parent, byte-grouped and compressed"

    def transform(self, words: Words, parent: Words) -> Words:
        return zigzag_diff(words, parent)

    def restore(self, stored: Words, parent: Words | None) -> Words:
        if parent is None:
            raise InvalidTensor("a diff encoding needs its parent tensor")
        return undo_zigzag_diff(stored, parent)
