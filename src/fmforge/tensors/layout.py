"""The safetensors file layout: split a file into its header and tensors, and put it back.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the byte buffer that
follows; ``"__metadata__"`` holds string metadata), then the buffer. ``tensors.header`` accepts
exactly the headers the reference loader accepts. The header bytes are kept
exactly as found, so ``write_file`` gives back the original file byte for byte. Reading goes
through ``mmap``: tensors are views, never copies of the whole file.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from fmforge.errors import InvalidTensor
from fmforge.tensors.header import MAX_HEADER, SafetensorsLayout, TensorEntry, parse_header

__all__ = [
    "MAX_HEADER",
    "SafetensorsLayout",
    "TensorEntry",
    "open_tensors",
    "parse_header",
    "read_layout",
    "write_file",
]


def read_layout(path: str | os.PathLike[str]) -> SafetensorsLayout:
    """The layout of the file at ``path``, refused unless the reference loader would load it:
    a valid header (``tensors.header``) whose tensors cover the rest of the file exactly."""
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidTensor(
                f"{path}: {len(prefix)} bytes is too short to be a safetensors file"
            )
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER:
            raise InvalidTensor(
                f"{path}: a safetensors header of {length:,} bytes is over the format's "
                f"limit of {MAX_HEADER:,}"
            )
        header = handle.read(length)
    if len(header) != length:
        raise InvalidTensor(
            f"{path}: truncated safetensors header ({len(header)} of {length} bytes)"
        )
    layout = parse_header(header, str(path))
    expected = layout.data_start + layout.data_size
    actual = path.stat().st_size
    if actual != expected:
        raise InvalidTensor(f"{path}: file has {actual} bytes, its header describes {expected}")
    return layout


@contextmanager
def open_tensors(
    path: str | os.PathLike[str],
) -> Iterator[tuple[SafetensorsLayout, Iterator[tuple[TensorEntry, memoryview]]]]:
    """The layout and an iterator of (entry, bytes view) in buffer order, over an mmap.

    The views are valid inside the ``with`` block; ``bytes(view)`` keeps a copy.
    """
    layout = read_layout(path)
    with open(path, "rb") as handle:
        if layout.data_size == 0:  # nothing to map (mmap refuses empty files), empty tensors
            yield layout, ((entry, memoryview(b"")) for entry in layout.entries)
            return
        # MAP_POPULATE maps the whole file in one call instead of one page fault per 4 KiB.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(handle.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        view = memoryview(mapped)
        try:
            start = layout.data_start
            yield (
                layout,
                (
                    (entry, view[start + entry.begin : start + entry.end])
                    for entry in layout.entries
                ),
            )
        finally:
            view.release()
            with suppress(BufferError):  # a caller kept a view; the map closes with it
                mapped.close()


def write_file(
    path: str | os.PathLike[str],
    header: bytes,
    tensors: Mapping[str, bytes | bytearray | memoryview],
) -> None:
    """Write a safetensors file from its stored header and each tensor's bytes."""
    layout = parse_header(header, str(path))
    missing = [e.name for e in layout.entries if e.name not in tensors]
    if missing:
        raise InvalidTensor(f"{path}: no bytes for tensor(s) {', '.join(missing[:5])}")
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header)))
        out.write(header)
        for entry in layout.entries:
            data = tensors[entry.name]
            if len(data) != entry.end - entry.begin:
                raise InvalidTensor(
                    f"{path}: tensor {entry.name!r} has {len(data)} bytes, "
                    f"the header says {entry.end - entry.begin}"
                )
            out.write(data)
