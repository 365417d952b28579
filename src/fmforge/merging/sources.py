"""Where the rows of a merge's tensors come from: a committed model, or a safetensors file.

A ``TensorSource`` gives rows ``start:stop`` (along the first dimension) of a named tensor, in
its own dtype. A file is read with ``os.pread`` into a fresh buffer per call, never mapped, so
the pages of inputs larger than memory are not kept resident (mergekit's memory is mostly mapped
input pages). A commit's tensors are rebuilt through their delta chains and checked against
their raw hash by ``CommitReader``, one tensor at a time, and dropped when the engine moves on.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from fmforge.errors import InvalidMerge
from fmforge.models import CommitReader
from fmforge.tensors.codec import TensorSpec
from fmforge.tensors.header import parse_header
from fmforge.tensors.layout import read_layout

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
FLOATS = frozenset({"F64", "F32", "F16", "BF16"})


def row_count(spec: TensorSpec) -> int:
    """Rows along the first dimension (a scalar is one row)."""
    return spec.shape[0] if spec.shape else 1


def row_shape(spec: TensorSpec) -> tuple[int, ...]:
    return spec.shape[1:] if spec.shape else ()


def torch_dtype(spec: TensorSpec, where: str) -> torch.dtype:
    dtype = TORCH_DTYPES.get(spec.dtype)
    if dtype is None:
        raise InvalidMerge(f"{where}: tensors of dtype {spec.dtype} cannot be merged")
    return dtype


def from_bytes(data: bytearray | memoryview, spec: TensorSpec, where: str) -> torch.Tensor:
    """A tensor over ``data`` (no copy when writable), shaped as rows."""
    dtype = torch_dtype(spec, where)
    if isinstance(data, memoryview) and data.readonly:
        data = bytearray(data)
    if len(data) == 0:
        return torch.empty((0, *row_shape(spec)), dtype=dtype)
    flat = torch.frombuffer(data, dtype=dtype)
    return flat.reshape((-1, *row_shape(spec)))


class TensorSource(ABC):
    """Rows of the tensors of one model."""

    label: str

    @abstractmethod
    def specs(self) -> dict[str, TensorSpec]:
        """Every tensor's spec, in the model's order."""

    def identity(self, name: str) -> str | None:
        """The tensor's raw hash when known without reading it (equal hashes: equal bytes)."""
        return None

    @abstractmethod
    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` in the tensor's dtype, shaped ``[stop - start, *shape[1:]]``."""

    def release(self, name: str) -> None:  # noqa: B027 - a source without a cache keeps nothing
        """The engine is done with ``name``: drop anything kept for it."""

    def close(self) -> None:  # noqa: B027
        """Release files and buffers."""


class SafetensorsFile(TensorSource):
    """A safetensors file read with ``os.pread``: each call reads exactly the rows asked for."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        try:
            self.layout = read_layout(self.path)
        except OSError as exc:
            raise InvalidMerge(f"{self.path}: cannot read it: {exc.strerror}") from None
        self._entries = {e.name: e for e in self.layout.entries}
        self._fd = os.open(self.path, os.O_RDONLY)

    def specs(self) -> dict[str, TensorSpec]:
        return {e.name: e.spec for e in self.layout.entries}

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        entry = self._entries[name]
        per_row = entry.spec.nbytes // max(row_count(entry.spec), 1)
        offset = self.layout.data_start + entry.begin + start * per_row
        size = (stop - start) * per_row
        buffer = torch.empty(size, dtype=torch.uint8)  # not zero-filled, unlike a bytearray
        view, done = buffer.numpy().data, 0
        while done < size:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise InvalidMerge(f"{self.path}: ends before tensor {name!r} does")
            done += got
        dtype = torch_dtype(entry.spec, f"{self.path}: {name}")
        return buffer.view(dtype).reshape((-1, *row_shape(entry.spec)))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CommitTensors(TensorSource):
    """The tensors of a commit: each rebuilt (hash-checked) when first read, kept until the
    engine releases it."""

    def __init__(self, reader: CommitReader, label: str) -> None:
        self.reader = reader
        self.label = label
        self._specs: dict[str, TensorSpec] = {}
        self._hashes: dict[str, str] = {}
        for name, digest, spec in reader.tensors():
            self._specs.setdefault(name, spec)
            self._hashes.setdefault(name, digest)
        self._cache: dict[str, torch.Tensor] = {}

    def specs(self) -> dict[str, TensorSpec]:
        return dict(self._specs)

    def identity(self, name: str) -> str | None:
        return self._hashes.get(name)

    def whole(self, name: str) -> torch.Tensor:
        found = self._cache.get(name)
        if found is None:
            data = self.reader.tensor_bytes(self._hashes[name])
            found = from_bytes(data, self._specs[name], f"{self.label}: {name}")
            self._cache[name] = found
        return found

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self.whole(name)[start:stop]

    def release(self, name: str) -> None:
        self._cache.pop(name, None)


class SafetensorsBytes(TensorSource):
    """A safetensors object held in memory (a recorded Fisher diagonal)."""

    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        if len(data) < 8:
            raise InvalidMerge(f"{label}: not a safetensors object")
        length = int.from_bytes(data[:8], "little")
        self.layout = parse_header(data[8 : 8 + length], label)
        self._data = bytearray(data)  # writable: tensors are views, never copies
        self._entries = {e.name: e for e in self.layout.entries}

    def specs(self) -> dict[str, TensorSpec]:
        return {e.name: e.spec for e in self.layout.entries}

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        entry = self._entries[name]
        begin = self.layout.data_start + entry.begin
        view = memoryview(self._data)[begin : self.layout.data_start + entry.end]
        return from_bytes(view, entry.spec, f"{self.label}: {name}")[start:stop]
