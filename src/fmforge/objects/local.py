"""Local-directory object store (``.fmforge/objects/``), laid out like git: ``ab/cdef...``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fmforge.errors import ObjectNotFound
from fmforge.objects.store import HEADER, Compression, ObjectInfo, ObjectStore

_HEX = set("0123456789abcdef")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        compression: Compression = "auto",
        zstd_level: int = 3,
        chunk_size: int = 8 << 20,
    ) -> None:
        super().__init__(compression=compression, zstd_level=zstd_level, chunk_size=chunk_size)
        self.root = Path(root)
        self.url = f"file://{self.root}"
        self._staging = self.root / "tmp"
        self._staging.mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def _exists(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def _publish(self, digest: str, staged: Path) -> None:
        target = self.path_of(digest)
        shard = target.parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        os.replace(staged, target)
        _fsync_dir(shard)

    def _open_stored(self, digest: str) -> BinaryIO:
        try:
            return open(self.path_of(digest), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(digest) from None

    def _read_header(self, digest: str) -> bytes:
        with self._open_stored(digest) as handle:
            return handle.read(HEADER.size)

    def _delete(self, digest: str) -> None:
        try:
            self.path_of(digest).unlink()
        except FileNotFoundError:
            raise ObjectNotFound(digest) from None

    def _iter_stored(self) -> Iterator[ObjectInfo]:
        for shard in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(shard.name) != 2 or not set(shard.name) <= _HEX or not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if len(entry.name) == 62 and set(entry.name) <= _HEX:
                    stat = entry.stat()
                    yield ObjectInfo(shard.name + entry.name, stat.st_size, stat.st_mtime)

    def _staging_dir(self) -> Path:
        return self._staging
