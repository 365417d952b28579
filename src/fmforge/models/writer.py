"""Storing a commit's tensors: dedup by raw hash, deltas on the parent's tensor of the same
name, encodings computed by a thread pool; and the manifest helpers push, pull and gc share."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import orjson

from fmforge.errors import CorruptTensor
from fmforge.models.refs import RefIndex
from fmforge.models.sources import ParentFiles
from fmforge.models.storage import (
    KEYFRAME_EVERY,
    StoredTensor,
    chain_of,
    load_tensor,
    raw_hash,
    store_tensor,
)
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec


@dataclass
class CommitResult:
    model: str
    commit: str
    branch: str
    parents: tuple[str, ...]
    tensors: int = 0
    reused: int = 0  # tensors already stored (unchanged): manifest entry only
    deltas: int = 0
    full: int = 0
    raw_bytes: int = 0  # size of the committed files
    stored_bytes: int = 0  # bytes of new objects this commit added
    kinds: dict[str, int] = field(default_factory=dict)
    forked_from: tuple[str, str] | None = None  # a new branch: (branch, commit) it started at
    dropped: tuple[str, ...] = ()  # a forced commit: commits the branch no longer reaches


def parent_tensors(
    repo: Repository, index: RefIndex, parent_id: str | None
) -> dict[tuple[str, str], StoredTensor]:
    """(file path, tensor name) -> stored tensor, for the parent commit.

    Also ("", tensor name) for names found in one file only, so a tensor still gets its delta
    base when the file was renamed (a single checkpoint file committed under a new name).
    """
    if parent_id is None:
        return {}
    manifest = load_manifest(repo, index.commit(parent_id).manifest)
    stored = {h: StoredTensor.from_record(r) for h, r in manifest["stored"].items()}
    by_path: dict[tuple[str, str], StoredTensor] = {}
    by_name: dict[str, list[StoredTensor]] = {}
    for f in manifest["files"]:
        if f["kind"] in ("safetensors", "torch"):
            for tensor in f["tensors"]:
                by_path[(f["path"], tensor[0])] = stored[tensor[1]]
                by_name.setdefault(tensor[0], []).append(stored[tensor[1]])
    for name, found in by_name.items():
        if len(found) == 1:
            by_path[("", name)] = found[0]
    return by_path


def delta_base(
    parents: dict[tuple[str, str], StoredTensor], relative: str, name: str
) -> StoredTensor | None:
    """The parent's tensor a changed tensor is encoded against: the one of the same file and
    name, else of the same name in one file only, else of the same name with leading
    components dropped (a task model's ``bert.encoder...`` over a base stored as
    ``encoder...``, so a finetune's sparse update is a delta on its base). Only compression
    depends on the choice: a base of another shape or dtype is not used."""
    found = parents.get((relative, name)) or parents.get(("", name))
    parts = name.split(".")
    for start in range(1, len(parts)):
        if found is not None:
            break
        found = parents.get(("", ".".join(parts[start:])))
    return found


def manifest_objects(manifest_digest: str, manifest: dict[str, Any]) -> set[str]:
    """Every object a commit needs: its manifest, file objects, headers, tensor encodings down
    each delta chain. What push and pull transfer, and what gc keeps for a reachable commit."""
    needed = {manifest_digest}
    for entry in manifest["files"]:
        if entry["kind"] == "blob":
            needed.add(entry["object"])
        elif entry["kind"] == "safetensors":
            needed.add(entry["header"])
    needed.update(record["blob"] for record in manifest["stored"].values())
    return needed


def load_manifest(repo: Repository, digest: str) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads(repo.objects.get(digest))
    return manifest


class TensorWriter:
    """Stores a commit's tensors: dedup by raw hash, deltas on the parent's tensor of the same
    name, encodings computed by a thread pool (numpy, zstd and blake3 release the GIL) with a
    bound on the bytes in flight, so memory stays near a few tensors whatever the model size."""

    _IN_FLIGHT_BYTES = 32 << 20

    def __init__(
        self,
        repo: Repository,
        index: RefIndex,
        parent_tensors: dict[tuple[str, str], StoredTensor],
        parent_files: ParentFiles,
        result: CommitResult,
        workers: int | None,
    ) -> None:
        self.repo = repo
        self.parent_files = parent_files
        self.index = index
        self.lookup = stored_lookup(index)
        self.parent_tensors = parent_tensors
        self.result = result
        self.stored: dict[str, dict[str, Any]] = {}
        # digest -> bytes this commit added, for every object it put (0: it was there already);
        # every one is a ref of the commit's event, so gc keeps it while the commit needs it
        self.new_objects: dict[str, int] = {}
        self.pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self.pending: dict[str, tuple[Future[StoredTensor], int]] = {}

    def added(self, digest: str, size: int, created: bool) -> None:
        """Note an object this commit put (a file or a header): its bytes count as stored only
        when the put created it."""
        self.new_objects[digest] = max(self.new_objects.get(digest, 0), size if created else 0)

    def hash_all(self, views: list[memoryview]) -> list[str]:
        return list(self.pool.map(raw_hash, views))

    def add(
        self, relative: str, name: str, view: memoryview, spec: TensorSpec, digest: str
    ) -> None:
        """Record tensor ``name`` of file ``relative``; encode it unless already stored."""
        self.result.tensors += 1
        if digest in self.stored or digest in self.pending:
            self.result.reused += 1
            return
        known = self.index.stored_tensor(digest)
        if known is not None:
            self.result.reused += 1
            self._keep(known)
            return
        self._wait_for_room(spec.nbytes)
        base = delta_base(self.parent_tensors, relative, name)
        future = self.pool.submit(self._encode, name, view, spec, digest, base)
        self.pending[digest] = (future, spec.nbytes)

    def _encode(
        self, name: str, view: memoryview, spec: TensorSpec, digest: str, base: StoredTensor | None
    ) -> StoredTensor:
        if base is None or base.dtype != spec.dtype or base.shape != spec.shape:
            return store_tensor(self.repo.objects, view, spec, digest=digest)
        base_bytes = None
        if base.depth + 1 >= KEYFRAME_EVERY:
            # The chain would grow too long: encode against its full encoding instead (depth
            # 1), which the encoder stores in full when that is smaller.
            base = chain_of(base, self.lookup)[-1]
        else:  # the parent's file, if still on disk as committed, spares replaying its chain
            base_bytes = self.parent_files.bytes_of(name, base)
        if base_bytes is None:
            base_bytes = load_tensor(self.repo.objects, base, self.lookup)
        return store_tensor(
            self.repo.objects, view, spec, digest=digest, base=base, base_bytes=base_bytes
        )

    def _wait_for_room(self, nbytes: int) -> None:
        while self.pending and (
            sum(size for _, size in self.pending.values()) + nbytes > self._IN_FLIGHT_BYTES
        ):
            wait([f for f, _ in self.pending.values()], return_when=FIRST_COMPLETED)
            self._collect(only_done=True)

    def _collect(self, *, only_done: bool) -> None:
        for digest, (future, _size) in list(self.pending.items()):
            if only_done and not future.done():
                continue
            record = future.result()
            del self.pending[digest]
            self._keep(record)
            self.new_objects[record.blob] = record.stored_bytes
            self.result.kinds[record.kind] = self.result.kinds.get(record.kind, 0) + 1
            if record.kind == "raw":
                self.result.full += 1
            else:
                self.result.deltas += 1

    def _keep(self, record: StoredTensor) -> None:
        """Record ``record`` and every tensor down its delta chain: a manifest alone tells how
        to rebuild each of its tensors (what push, pull and gc rely on)."""
        self.stored[record.raw_hash] = record.to_record()
        while record.base is not None and record.base not in self.stored:
            record = self.lookup(record.base)
            self.stored[record.raw_hash] = record.to_record()

    def finish(self) -> None:
        """Wait for every encoding (views into mmaps must not outlive their file's block)."""
        self._collect(only_done=False)

    def __enter__(self) -> TensorWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def stored_lookup(index: RefIndex) -> Callable[[str], StoredTensor]:
    """Finds the stored form of a tensor by raw hash (for replaying delta chains)."""

    def lookup(raw_hash: str) -> StoredTensor:
        record = index.stored_tensor(raw_hash)
        if record is None:
            raise CorruptTensor(f"no stored tensor {raw_hash} (a delta base is missing)")
        return record

    return lookup
