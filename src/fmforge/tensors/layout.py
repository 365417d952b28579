"""The safetensors file layout: split a file into its header and tensors, and put it back.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the byte buffer that
follows; ``"__metadata__"`` holds string metadata), then the buffer. The header bytes are kept
exactly as found, so ``write_file`` gives back the original file byte for byte. Reading goes
through ``mmap``: tensors are views, never copies of the whole file.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from fmforge.errors import InvalidTensor
from fmforge.tensors.codec import TensorSpec

MAX_HEADER = 100 << 20  # the reference implementation's limit


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str
    spec: TensorSpec
    begin: int  # offsets into the data buffer, as in the header
    end: int


@dataclass(frozen=True, slots=True)
class SafetensorsLayout:
    header: bytes  # the JSON header exactly as stored (trailing padding included)
    entries: tuple[TensorEntry, ...]  # in buffer order
    metadata: Mapping[str, str] | None

    @property
    def data_start(self) -> int:
        return 8 + len(self.header)

    @property
    def data_size(self) -> int:
        return self.entries[-1].end if self.entries else 0


def parse_header(header: bytes, source: str = "<header>") -> SafetensorsLayout:
    """Validate a header: known dtypes, sizes that match shapes, a buffer with no holes."""
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidTensor(f"{source}: safetensors header is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidTensor(f"{source}: safetensors header is not a JSON object")
    metadata = parsed.pop("__metadata__", None)
    entries = []
    for name, info in parsed.items():
        try:
            spec = TensorSpec(info["dtype"], tuple(int(d) for d in info["shape"]))
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTensor(f"{source}: tensor {name!r} has a malformed entry: {exc}") from None
        except InvalidTensor as exc:
            raise InvalidTensor(f"{source}: tensor {name!r}: {exc}") from None
        if end - begin != spec.nbytes:
            raise InvalidTensor(
                f"{source}: tensor {name!r} spans {end - begin} bytes, "
                f"{spec.dtype}{list(spec.shape)} needs {spec.nbytes}"
            )
        entries.append(TensorEntry(name, spec, begin, end))
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for entry in entries:
        if entry.begin != position:
            raise InvalidTensor(
                f"{source}: tensor {entry.name!r} starts at byte {entry.begin} of the buffer, "
                f"expected {position} (safetensors buffers have no holes or overlaps)"
            )
        position = entry.end
    return SafetensorsLayout(header, tuple(entries), metadata)


def read_layout(path: str | os.PathLike[str]) -> SafetensorsLayout:
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidTensor(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER:
            raise InvalidTensor(f"{path}: safetensors header of {length} bytes is implausible")
        header = handle.read(length)
    if len(header) != length:
        raise InvalidTensor(f"{path}: truncated safetensors header")
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
        if layout.data_size == 0:
            yield layout, iter(())
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
