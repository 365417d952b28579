"""Where a commit's safetensors files came from, to read a parent's tensors from disk.

Committing a version means encoding each changed tensor against the parent's, which would
otherwise be rebuilt through its delta chain. When the parent's files are still on disk,
unchanged since they were committed (same size, mtime and inode, as git's index checks), their
tensors are read from there instead, each checked against its raw hash before use. This is a
local cache in ``.fmforge/sources.json``: not a fact of the ledger, safe to delete.
"""

from __future__ import annotations

import json
import mmap
from contextlib import ExitStack, suppress
from pathlib import Path

from fmforge.models.storage import StoredTensor, raw_hash
from fmforge.repository import Repository
from fmforge.tensors.layout import read_layout

_FILE = "sources.json"
_KEEP = 64  # commits remembered


def _stat(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def remember(repo: Repository, commit: str, files: list[Path]) -> None:
    """Record the safetensors files ``commit`` was made from."""
    target = repo.path / _FILE
    try:
        known = json.loads(target.read_text()) if target.exists() else {}
    except (OSError, ValueError):
        known = {}  # a damaged cache is only a cache
    known[commit] = [[str(p.resolve()), *_stat(p)] for p in files]
    for old in list(known)[:-_KEEP]:
        del known[old]
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(known))
    tmp.replace(target)


class ParentFiles:
    """The parent's tensors, by name, from its source files when those are unchanged."""

    def __init__(self, repo: Repository, parent: str | None) -> None:
        self._stack = ExitStack()
        self._tensors: dict[str, memoryview] = {}
        if parent is None:
            return
        try:
            known = json.loads((repo.path / _FILE).read_text()).get(parent, [])
        except (OSError, ValueError):
            return
        for name, *stat in known:
            path = Path(name)
            try:
                if _stat(path) != stat:
                    continue
                self._map(path)
            except OSError:
                continue  # moved or deleted since: the chain is replayed instead

    def _map(self, path: Path) -> None:
        layout = read_layout(path)
        if layout.data_size == 0:
            return
        with open(path, "rb") as handle:  # the map outlives the file handle
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._stack.callback(_close_quietly, mapped)
        view = memoryview(mapped)
        for entry in layout.entries:
            start = layout.data_start + entry.begin
            self._tensors.setdefault(entry.name, view[start : layout.data_start + entry.end])

    def bytes_of(self, name: str, stored: StoredTensor) -> memoryview | None:
        """Tensor ``name`` if its bytes on disk hash to ``stored``; else None."""
        data = self._tensors.get(name)
        if data is None or raw_hash(data) != stored.raw_hash:
            return None
        return data

    def close(self) -> None:
        self._tensors.clear()
        self._stack.close()

    def __enter__(self) -> ParentFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(mapped: mmap.mmap) -> None:
    with suppress(BufferError):  # a view still held elsewhere: the map closes with it
        mapped.close()
