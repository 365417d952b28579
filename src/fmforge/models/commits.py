"""Committing a model version: files into objects, tensors deduplicated and delta-encoded.

A commit stores a manifest object::

    {"format": 1,
     "files": [{"path": "model.safetensors", "kind": "safetensors", "header": DIGEST,
                "size": N, "tensors": [[name, raw_hash], ...]},
               {"path": "pytorch_model.bin", "kind": "torch", "size": N,
                "tensors": [[name, raw_hash, dtype, shape], ...]},
               {"path": "config.json", "kind": "blob", "object": DIGEST, "size": N}],
     "stored": {raw_hash: StoredTensor record, ...},   # every tensor used, and its delta chain
     "adapter": {...}}                                 # a PEFT adapter's config, if one

A safetensors file has no holes, so its header (kept verbatim) and its tensors in buffer order
are the whole file: checking the header's digest and every tensor's hash checks the file.

and records ``ModelCommitted`` plus ``BranchCreated``/``BranchMoved`` on the stream
``model/<name>`` in one append, guarded by the stream version read when the parent was resolved:
of two concurrent commits to one branch, one wins and the other gets ``BranchConflict``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import orjson
from threadpoolctl import threadpool_limits

from fmforge.errors import (
    BranchConflict,
    CorruptTensor,
    InvalidModelSource,
    ModelNotFound,
    RefNotFound,
    StreamVersionConflict,
)
from fmforge.ledger import NewEvent
from fmforge.ledger.events import canonical_json, utc_now
from fmforge.models.inputs import is_torch_weights, source_files
from fmforge.models.refs import (
    STREAM_PREFIX,
    ModelRefs,
    RefIndex,
    split_model_ref,
    validate_model_name,
)
from fmforge.models.sources import ParentFiles, remember
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


def _adapter_info(path: Path) -> dict[str, Any] | None:
    """``adapter_config.json`` of a PEFT adapter directory, if ``path`` is one."""
    config = path / "adapter_config.json" if path.is_dir() else None
    if config is None or not config.is_file():
        return None
    try:
        parsed = orjson.loads(config.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidModelSource(f"{config}: not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidModelSource(f"{config}: expected a JSON object")
    return {
        "peft_type": parsed.get("peft_type"),
        "base_model_name_or_path": parsed.get("base_model_name_or_path"),
        "r": parsed.get("r"),
        "target_modules": parsed.get("target_modules"),
    }


def commit_model(
    repo: Repository,
    name: str,
    path: str | os.PathLike[str],
    message: str,
    *,
    branch: str = "main",
    parent: str | None = None,
    expected_head: str | None = None,
    base: str | None = None,
    workers: int | None = None,
) -> CommitResult:
    """Commit the weights file or model directory at ``path`` to ``name`` on ``branch``.

    ``path``: a ``.safetensors`` file, a Hugging Face model directory (safetensors shards or
    PyTorch ``.bin`` state dicts, config and tokenizer files), or a PEFT adapter directory.
    ``base``: ``NAME@REF`` of the model an adapter adapts; recorded with the commit (for a PEFT
    adapter without it, ``base_model_name_or_path`` is used when it names a registered model).
    ``expected_head``: refuse (``BranchConflict``) unless the branch points at this commit when
    the commit is recorded, as ``git push --force-with-lease`` does. Without it, a commit still
    never lands on a branch that moved after its parent was read.
    ``workers``: threads encoding changed tensors (default: one per core).
    """
    validate_model_name(name)
    source_path = Path(path)
    index = refs(repo)
    stream = STREAM_PREFIX + name
    version = repo.ledger.stream_version(stream)
    branches = index.branches(name) if version else {}
    previous = branches.get(branch)
    if expected_head is not None and previous != expected_head:
        raise BranchConflict(name, branch)
    parent_id = index.resolve(name, parent) if parent is not None else previous
    parents = (parent_id,) if parent_id else ()
    adapter = _adapter_info(source_path)
    adapts = _resolve_base(index, base, adapter)
    sources = source_files(source_path)

    result = CommitResult(name, "", branch, parents)
    parent_tensors = _parent_tensors(repo, index, parent_id)
    files: list[dict[str, Any]] = []
    # Tensors are encoded in parallel already; BLAS threads on top would only spin.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ParentFiles(repo, parent_id) as parent_files,
        _TensorWriter(repo, index, parent_tensors, parent_files, result, workers) as writer,
    ):
        for relative, source in sources:
            entry: dict[str, Any] | None
            if source.suffix == ".safetensors":
                entry = _commit_safetensors(writer, relative, source)
            elif is_torch_weights(source):
                entry = _commit_torch(writer, relative, source)
            else:
                entry = None
            if entry is None:
                digest = repo.objects.put(source)
                size = source.stat().st_size
                writer.new_objects[digest] = size
                entry = {"path": relative, "kind": "blob", "object": digest, "size": size}
            result.raw_bytes += int(entry["size"])
            files.append(entry)
        writer.finish()
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "files": files, "stored": writer.stored}
    if adapter is not None:
        manifest["adapter"] = adapter
    manifest_digest = repo.objects.put(canonical_json(manifest, "manifest"))
    new_objects = writer.new_objects
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
    data: dict[str, Any] = {
        "model": name,
        "commit": commit_id,
        "parents": list(parents),
        "manifest": manifest_digest,
        "message": message,
        "branch": branch,
        "tensors": result.tensors,
        "raw_bytes": result.raw_bytes,
        "stored_bytes": result.stored_bytes,
        "time": now,  # the commit id covers it; kept when the event is pushed elsewhere
    }
    if adapts is not None:
        data["base"] = adapts
    events = [
        NewEvent("ModelCommitted", data, refs=tuple(sorted(new_objects))),
        branch_event(name, branch, commit_id, previous, "commit"),
    ]
    try:
        repo.ledger.append(stream, events, expected_version=version)
    except StreamVersionConflict:
        raise BranchConflict(name, branch) from None
    remember(repo, commit_id, [p for _, p in sources if p.suffix == ".safetensors"])
    refs(repo)
    return result


def _resolve_base(index: RefIndex, base: str | None, adapter: dict[str, Any] | None) -> str | None:
    """``NAME@COMMIT`` of the model an adapter adapts, or None."""
    if base is not None:
        model, ref = split_model_ref(base)
        return f"{model}@{index.resolve(model, ref)}"
    hint = adapter.get("base_model_name_or_path") if adapter else None
    if isinstance(hint, str) and hint:
        try:
            model, ref = split_model_ref(hint)
            return f"{model}@{index.resolve(model, ref)}"
        except (ModelNotFound, RefNotFound):
            return None  # a hub id or a path: kept in the manifest's adapter record
    return None


def branch_event(model: str, branch: str, commit: str, previous: str | None, why: str) -> NewEvent:
    if previous is None:
        return NewEvent("BranchCreated", {"model": model, "branch": branch, "commit": commit})
    return NewEvent(
        "BranchMoved",
        {"model": model, "branch": branch, "commit": commit, "previous": previous, "reason": why},
    )


def _parent_tensors(
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


class _TensorWriter:
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
        self.new_objects: dict[str, int] = {}  # digest -> size of every object this commit put
        self.pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self.pending: dict[str, tuple[Future[StoredTensor], int]] = {}

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
        base = self.parent_tensors.get((relative, name)) or self.parent_tensors.get(("", name))
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

    def __enter__(self) -> _TensorWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _commit_safetensors(writer: _TensorWriter, relative: str, source: Path) -> dict[str, Any]:
    with open_tensors(source) as (layout, views):
        header_digest = writer.repo.objects.put(layout.header)
        writer.new_objects[header_digest] = len(layout.header)
        pairs = list(views)
        digests = writer.hash_all([view for _, view in pairs])
        for (entry, view), digest in zip(pairs, digests, strict=True):
            writer.add(relative, entry.name, view, entry.spec, digest)
        writer.finish()
        del pairs
    return {
        "path": relative,
        "kind": "safetensors",
        "header": header_digest,
        "size": source.stat().st_size,
        "tensors": [
            [entry.name, digest] for entry, digest in zip(layout.entries, digests, strict=True)
        ],
    }


def _commit_torch(writer: _TensorWriter, relative: str, source: Path) -> dict[str, Any]:
    """A PyTorch state dict, loaded with ``weights_only=True`` (anything else is refused, see
    ``load_torch_state_dict``). Its tensors are stored like safetensors tensors."""
    from fmforge.tensors.torch_files import load_torch_state_dict

    loaded = load_torch_state_dict(source)
    tensors = []
    items = list(loaded.items())
    digests = writer.hash_all([data for _, (_spec, data) in items])
    for (tensor_name, (spec, data)), digest in zip(items, digests, strict=True):
        writer.add(relative, tensor_name, data, spec, digest)
        tensors.append([tensor_name, digest, spec.dtype, list(spec.shape)])
    writer.finish()
    return {"path": relative, "kind": "torch", "size": source.stat().st_size, "tensors": tensors}


def stored_lookup(index: RefIndex) -> Callable[[str], StoredTensor]:
    """Finds the stored form of a tensor by raw hash (for replaying delta chains)."""

    def lookup(raw_hash: str) -> StoredTensor:
        record = index.stored_tensor(raw_hash)
        if record is None:
            raise CorruptTensor(f"no stored tensor {raw_hash} (a delta base is missing)")
        return record

    return lookup
