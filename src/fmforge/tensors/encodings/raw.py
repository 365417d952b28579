"""``raw``: the words themselves, byte-grouped and compressed. The one encoding that needs no
parent; every tensor without a parent, and every keyframe, is stored this way."""

from __future__ import annotations

from typing import ClassVar

from fmforge.tensors.encodings.base import DenseEncoding, EncodedTensor, Kind, Words
from fmforge.tensors.encodings.planes import pack, planes


class Raw(DenseEncoding):
    name: ClassVar[Kind] = "raw"
    summary = "the tensor's bytes, byte-grouped and zstd-compressed"
    needs_parent = False

    def alone(self, words: Words) -> EncodedTensor:
        """The encoding of a tensor that has no parent (compressed in one call per plane)."""
        return EncodedTensor(self.name, pack(planes(words)))

    def transform(self, words: Words, parent: Words) -> Words:
        return words

    def restore(self, stored: Words, parent: Words | None) -> Words:
        return stored
