"""``xor``: the bitwise XOR with the parent, byte-grouped and compressed. A small update leaves
the high bytes of most elements unchanged, so their XOR planes are runs of zeros."""

from __future__ import annotations

from typing import ClassVar

from fmforge.errors import InvalidTensor
from fmforge.tensors.encodings.base import DenseEncoding, Kind, Words


class Xor(DenseEncoding):
    name: ClassVar[Kind] = "xor"
    summary = "bitwise XOR with the parent, byte-grouped and zstd-compressed"

    def transform(self, words: Words, parent: Words) -> Words:
        return words ^ parent

    def restore(self, stored: Words, parent: Words | None) -> Words:
        if parent is None:
            raise InvalidTensor("a xor encoding needs its parent tensor")
        stored ^= parent
        return stored
