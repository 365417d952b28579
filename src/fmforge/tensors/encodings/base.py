"""What an encoding is: a named, lossless way to store a tensor's words, alone or against the
same tensor's parent version.

Two families: a ``DenseEncoding`` maps the words (and the parent's) to words of the same count
and stores their byte planes; it always applies. A ``SelectiveEncoding`` (sparse, low-rank)
applies only to some updates and says so by returning None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from fmforge.tensors.encodings.planes import pack_dense, unpack, unplanes
from fmforge.tensors.spec import TensorSpec

# Stored in tensor objects by position (``models.storage``): append new kinds, never reorder.
Kind = Literal["raw", "xor", "diff", "sparse", "lowrank"]
Words = np.ndarray[Any, Any]


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


class Encoding(ABC):
    name: ClassVar[Kind]
    summary: ClassVar[str]
    needs_parent: ClassVar[bool] = True

    @abstractmethod
    def decode(self, payload: bytes | memoryview, spec: TensorSpec, parent: Words | None) -> Words:
        """The words, from a payload this encoding wrote (``parent``: the parent's words)."""


class DenseEncoding(Encoding):
    """Stores ``transform(words, parent)`` as compressed byte planes."""

    @abstractmethod
    def transform(self, words: Words, parent: Words) -> Words:
        """Words of the same count and width, that compress well for a typical update."""

    @abstractmethod
    def restore(self, stored: Words, parent: Words | None) -> Words:
        """Inverse of ``transform`` (may work in place on ``stored``)."""

    def encode(self, words: Words, parent: Words) -> EncodedTensor:
        return EncodedTensor(self.name, pack_dense(self.transform, words, parent))

    def decode(self, payload: bytes | memoryview, spec: TensorSpec, parent: Words | None) -> Words:
        itemsize = spec.itemsize
        return self.restore(unplanes(unpack(payload, itemsize), itemsize), parent)


class SelectiveEncoding(Encoding):
    """A delta that suits some updates only (few changed entries, a low-rank change)."""

    @abstractmethod
    def encode(
        self, words: Words, parent: Words, spec: TensorSpec, changed: int
    ) -> EncodedTensor | None:
        """The encoding, or None where it does not apply (``changed``: words that differ)."""
