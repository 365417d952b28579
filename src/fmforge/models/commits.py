"""Committing a model version: files into objects, tensors deduplicated and delta-encoded.

A commit stores a manifest object::

    {"format": 1,
     "files": [{"path": "model.safetensors", "kind": "safetensors", "header": DIGEST,
                "file_hash": BLAKE3, "size": N, "tensors": [[name, raw_hash], ...]},
               {"path": "config.json", "kind": "blob", "object": DIGEST, "size": N}],
     "stored": {raw_hash: StoredTensor record, ...}}   # every tensor this commit uses

and records ``ModelCommitted`` plus ``BranchCreated``/``BranchMoved`` on the stream
``model/<name>`` in one append, guarded by the stream version read when the parent was resolved:
of two concurrent commits to one branch, one wins and the other gets ``BranchConflict``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import orjson

from fmforge.errors import (
    BranchConflict,
    CorruptTensor,
    InvalidModelSource,
    StreamVersionConflict,
)
from fmforge.ledger import NewEvent
from fmforge.ledger.events import canonical_json, utc_now
from fmforge.models.refs import STREAM_PREFIX, ModelRefs, RefIndex, validate_model_name
from fmforge.models.storage import StoredTensor, load_tensor, store_tensor
from fmforge.repository import Repository
from fmforge.tensors.layout import open_tensors

MANIFEST_FORMAT = 1


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


def refs(repo: Repository) -> RefIndex:
    """The model refs projection, brought up to date with the ledger."""
    repo.views.run(ModelRefs(repo.objects))
    return RefIndex(repo.views.db)


def _source_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InvalidModelSource(f"{path}: a single file must be a .safetensors file")
        return [(path.name, path)]
    if not path.is_dir():
        raise InvalidModelSource(f"{path}: no such file or directory")
    files = sorted(
        (p.relative_to(path).as_posix(), p)
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise InvalidModelSource(f"{path}: the directory has no files to commit")
    return files


def commit_model(
    repo: Repository,
    name: str,
    path: str | os.PathLike[str],
    message: str,
    *,
    branch: str = "main",
    parent: str | None = None,
    expected_head: str | None = None,
) -> CommitResult:
    """Commit the safetensors file or model directory at ``path`` to ``name`` on ``branch``.

    ``expected_head``: refuse (``BranchConflict``) unless the branch points at this commit when
    the commit is recorded, as ``git push --force-with-lease`` does. Without it, a commit still
    never lands on a branch that moved after its parent was read.
    """
    validate_model_name(name)
    index = refs(repo)
    stream = STREAM_PREFIX + name
    version = repo.ledger.stream_version(stream)
    branches = index.branches(name) if version else {}
    previous = branches.get(branch)
    if expected_head is not None and previous != expected_head:
        raise BranchConflict(name, branch)
    parent_id = index.resolve(name, parent) if parent is not None else previous
    parents = (parent_id,) if parent_id else ()
    parent_tensors = _parent_tensors(repo, index, parent_id)

    result = CommitResult(name, "", branch, parents)
    new_objects: dict[str, int] = {}  # digest -> raw size of every object this commit put
    files: list[dict[str, Any]] = []
    stored: dict[str, dict[str, object]] = {}
    for relative, source in _source_files(Path(path)):
        if source.suffix == ".safetensors":
            entry = _commit_safetensors(
                repo, index, relative, source, parent_tensors, stored, new_objects, result
            )
        else:
            digest = repo.objects.put(source)
            size = source.stat().st_size
            new_objects[digest] = size
            entry = {"path": relative, "kind": "blob", "object": digest, "size": size}
            result.raw_bytes += size
        files.append(entry)
    manifest = {"format": MANIFEST_FORMAT, "files": files, "stored": stored}
    manifest_digest = repo.objects.put(canonical_json(manifest, "manifest"))
    result.stored_bytes += sum(new_objects.values())  # sizes known when put: no re-reads
    new_objects[manifest_digest] = 0

    now = utc_now()
    commit_id = blake3.blake3(
        canonical_json(
            {
                "model": name,
                "parents": list(parents),
                "manifest": manifest_digest,
                "message": message,
                "time": now,
                "actor": repo.ledger.actor,
            },
            "commit",
        )
    ).hexdigest()
    result.commit = commit_id
    events = [
        NewEvent(
            "ModelCommitted",
            {
                "model": name,
                "commit": commit_id,
                "parents": list(parents),
                "manifest": manifest_digest,
                "message": message,
                "branch": branch,
                "tensors": result.tensors,
                "raw_bytes": result.raw_bytes,
                "stored_bytes": result.stored_bytes,
            },
            refs=tuple(sorted(new_objects)),
        ),
        _branch_event(name, branch, commit_id, previous, "commit"),
    ]
    try:
        repo.ledger.append(stream, events, expected_version=version)
    except StreamVersionConflict:
        raise BranchConflict(name, branch) from None
    refs(repo)
    return result


def _branch_event(model: str, branch: str, commit: str, previous: str | None, why: str) -> NewEvent:
    if previous is None:
        return NewEvent("BranchCreated", {"model": model, "branch": branch, "commit": commit})
    return NewEvent(
        "BranchMoved",
        {"model": model, "branch": branch, "commit": commit, "previous": previous, "reason": why},
    )


def _parent_tensors(
    repo: Repository, index: RefIndex, parent_id: str | None
) -> dict[tuple[str, str], StoredTensor]:
    """(file path, tensor name) -> stored tensor, for the parent commit."""
    if parent_id is None:
        return {}
    manifest = load_manifest(repo, index.commit(parent_id).manifest)
    stored = {h: StoredTensor.from_record(r) for h, r in manifest["stored"].items()}
    return {
        (f["path"], tensor_name): stored[h]
        for f in manifest["files"]
        if f["kind"] == "safetensors"
        for tensor_name, h in f["tensors"]
    }


def load_manifest(repo: Repository, digest: str) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads(repo.objects.get(digest))
    return manifest


def _commit_safetensors(
    repo: Repository,
    index: RefIndex,
    relative: str,
    source: Path,
    parent_tensors: dict[tuple[str, str], StoredTensor],
    stored: dict[str, dict[str, object]],
    new_objects: dict[str, int],
    result: CommitResult,
) -> dict[str, Any]:
    file_hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    file_hasher.update_mmap(source)
    tensors: list[list[str]] = []
    with open_tensors(source) as (layout, views):
        header_digest = repo.objects.put(layout.header)
        new_objects[header_digest] = len(layout.header)
        for entry, view in views:
            digest = blake3.blake3(view).hexdigest()
            tensors.append([entry.name, digest])
            result.tensors += 1
            known = stored.get(digest)
            record = StoredTensor.from_record(known) if known else index.stored_tensor(digest)
            if record is None:
                base = parent_tensors.get((relative, entry.name))
                base_bytes = (
                    load_tensor(repo.objects, base, stored_lookup(index), {})
                    if base is not None
                    else None
                )
                record = store_tensor(
                    repo.objects, view, entry.spec, digest=digest, base=base, base_bytes=base_bytes
                )
                new_objects[record.blob] = record.stored_bytes
                result.kinds[record.kind] = result.kinds.get(record.kind, 0) + 1
                if record.kind == "raw":
                    result.full += 1
                else:
                    result.deltas += 1
            else:
                result.reused += 1
            stored[digest] = record.to_record()
    size = source.stat().st_size
    result.raw_bytes += size
    return {
        "path": relative,
        "kind": "safetensors",
        "header": header_digest,
        "file_hash": file_hasher.hexdigest(),
        "size": size,
        "tensors": tensors,
    }


def stored_lookup(index: RefIndex) -> Callable[[str], StoredTensor]:
    """Finds the stored form of a tensor by raw hash (for replaying delta chains)."""

    def lookup(raw_hash: str) -> StoredTensor:
        record = index.stored_tensor(raw_hash)
        if record is None:
            raise CorruptTensor(f"no stored tensor {raw_hash} (a delta base is missing)")
        return record

    return lookup
