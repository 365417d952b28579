"""``sparse``: positions of the words that changed (gaps, compressed) and their zigzag
differences; for updates that touch a few percent of the entries.

Payload: ``<QB`` (changed count, gap width 4 or 8), then the packed byte planes of the gaps
followed by those of the values.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import ClassVar

import numpy as np

from fmforge.errors import CorruptTensor, InvalidTensor
from fmforge.tensors.encodings.base import EncodedTensor, Kind, SelectiveEncoding, Words
from fmforge.tensors.encodings.diff import undo_zigzag_diff, zigzag_diff
from fmforge.tensors.encodings.planes import pack, planes, unpack, unplanes
from fmforge.tensors.spec import TensorSpec

MAX_FRACTION = 0.25  # tried only when at most this share of the words changed


class Sparse(SelectiveEncoding):
    name: ClassVar[Kind] = "sparse"
    summary = "gaps between changed positions and their values, for updates of few entries"

    def encode(
        self, words: Words, parent: Words, spec: TensorSpec, changed: int
    ) -> EncodedTensor | None:
        if changed > MAX_FRACTION * max(words.size, 1):
            return None
        positions = np.flatnonzero(words != parent)
        gaps = np.diff(positions, prepend=-1).astype(np.uint64)
        wide = bool(gaps.size) and int(gaps.max()) > 0xFFFFFFFF
        gaps = gaps if wide else gaps.astype(np.uint32)
        values = zigzag_diff(words[positions], parent[positions])
        header = struct.pack("<QB", positions.size, 8 if wide else 4)
        return EncodedTensor(self.name, (header, *pack(chain(planes(gaps), planes(values)))))

    def decode(self, payload: bytes | memoryview, spec: TensorSpec, parent: Words | None) -> Words:
        if parent is None:
            raise InvalidTensor("a sparse encoding needs its parent tensor")
        itemsize = spec.itemsize
        count, gap_width = struct.unpack("<QB", payload[:9])
        if gap_width not in (4, 8):
            raise CorruptTensor(f"sparse payload has gap width {gap_width}")
        parts = unpack(payload[9:], gap_width + itemsize)
        positions = np.cumsum(unplanes(parts[:gap_width], gap_width).astype(np.int64)) - 1
        values = unplanes(parts[gap_width:], itemsize)
        if positions.size != count or values.size != count:
            raise CorruptTensor("sparse payload counts disagree")
        if count and (positions[0] < 0 or positions[-1] >= parent.size):
            raise CorruptTensor("sparse payload points outside the tensor")
        out = parent.copy()
        out[positions] = undo_zigzag_diff(values, parent[positions])
        return out
