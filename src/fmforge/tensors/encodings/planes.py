"""Byte planes and compressed blocks: the container of every encoding's payload.

A tensor's words are split into byte planes (all first bytes, then all second bytes, ...):
grouping puts the slowly varying sign/exponent bytes of floats together. Each part is
zstd-compressed alone, behind a table of the compressed sizes (``pack``/``unpack``).
Large tensors are compressed and decompressed in chunks, so no full-size temporary exists.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import zstandard

from fmforge.errors import CorruptTensor

Words = np.ndarray[Any, Any]
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
CHUNK = 1 << 20  # elements per step of the elementwise passes: temporaries stay small
# Byte planes of weights hold few long matches: what compresses is their skewed byte histogram.
# Level 1 with a small hash table and min match 7 compresses them as well as level 3 (even a
# little better) at ~1/3 of its time; a match finder working harder finds nothing more.
PARAMS = zstandard.ZstdCompressionParameters.from_level(
    1, hash_log=10, min_match=7, write_content_size=True
)
_local = threading.local()


def planes(words: Words) -> Iterator[Words]:
    """Byte planes, one at a time: plane k holds byte k of every word."""
    itemsize = words.dtype.itemsize
    as_bytes = words.view(np.uint8).reshape(-1, itemsize)
    for k in range(itemsize):
        yield np.ascontiguousarray(as_bytes[:, k])


def unplanes(blocks: Sequence[memoryview], itemsize: int) -> Words:
    """Words from their compressed byte planes. Each plane is streamed through a buffer of
    ``CHUNK`` bytes, so memory holds the result and little else."""
    if len(blocks) != itemsize:
        raise CorruptTensor(f"{len(blocks)} byte planes for {itemsize}-byte elements")
    sizes = {zstandard.frame_content_size(block) for block in blocks}
    if len(sizes) != 1 or min(sizes) < 0:
        raise CorruptTensor("byte planes disagree in length or do not record it")
    count = sizes.pop()
    out = np.empty((count, itemsize), dtype=np.uint8)
    decompressor = zstandard.ZstdDecompressor()
    buffer = np.empty(min(count, CHUNK), dtype=np.uint8)
    for k, block in enumerate(blocks):
        with decompressor.stream_reader(block) as reader:
            for start in range(0, count, CHUNK):
                view = memoryview(buffer.data)[: min(CHUNK, count - start)]
                filled = 0
                while filled < len(view):
                    got = reader.readinto(view[filled:])
                    if not got:
                        raise CorruptTensor("a byte plane ends early")
                    filled += got
                out[start : start + len(view), k] = buffer[: len(view)]
    return out.reshape(-1).view(UINT[itemsize])


def compressor() -> zstandard.ZstdCompressor:
    """One per thread (a compressor is not safe to share between threads)."""
    found = getattr(_local, "compressor", None)
    if found is None:
        found = _local.compressor = zstandard.ZstdCompressor(compression_params=PARAMS)
    return found


def pack(parts: Iterable[Any]) -> tuple[bytes, ...]:
    """Each part (bytes or a contiguous array) compressed alone, behind a table of sizes."""
    blocks = [compressor().compress(p) for p in parts]
    return (struct.pack(f"<{len(blocks)}Q", *map(len, blocks)), *blocks)


def unpack(payload: bytes | memoryview, count: int) -> list[memoryview]:
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


def pack_dense(
    transform: Callable[[Words, Words], Words], words: Words, parent: Words
) -> tuple[bytes, ...]:
    """``pack(planes(transform(words, parent)))`` computed ``CHUNK`` elements at a time: each
    plane goes through its own streaming compressor, so no full-size temporary is allocated."""
    if words.size <= CHUNK:
        return pack(planes(transform(words, parent)))
    itemsize = words.dtype.itemsize
    streams = [
        zstandard.ZstdCompressor(compression_params=PARAMS).compressobj(size=words.size)
        for _ in range(itemsize)
    ]
    pieces: list[list[bytes]] = [[] for _ in range(itemsize)]
    for start in range(0, words.size, CHUNK):
        stop = start + CHUNK
        chunk = transform(words[start:stop], parent[start:stop])
        for k, plane in enumerate(planes(chunk)):
            pieces[k].append(streams[k].compress(plane.data))
    for k in range(itemsize):
        pieces[k].append(streams[k].flush())
    table = struct.pack(f"<{itemsize}Q", *(sum(map(len, p)) for p in pieces))
    return (table, *(piece for plane in pieces for piece in plane if piece))


def decompress(block: memoryview) -> bytes:
    data: bytes = zstandard.ZstdDecompressor().decompress(block)
    return data
