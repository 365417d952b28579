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

Branches behave as git's: a commit to an existing branch must descend from its head (else
``BranchDiverged``, unless ``force``, which records the rewrite naming the commits it drops); a
new branch forks from the model's default branch head (``main``), ``orphan`` starts a root.
``commit_tensors`` commits a mapping of tensors (torch or numpy) as one safetensors file,
without a temporary directory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import (
    BranchConflict,
    BranchDiverged,
    InvalidModelSource,
    InvalidName,
    InvalidTensor,
    ModelNotFound,
    RefNotFound,
    StreamVersionConflict,
    UsageError,
)
from fmforge.ledger import NewEvent
from fmforge.ledger.events import canonical_json, utc_now
from fmforge.models.events import BranchCreated, BranchMoved, ModelCommitted
from fmforge.models.inputs import is_torch_weights, source_files
from fmforge.models.names import validate_model_name, validate_ref_name
from fmforge.models.refs import STREAM_PREFIX, ModelRefs, RefIndex, split_model_ref
from fmforge.models.sources import ParentFiles, remember
from fmforge.models.writer import CommitResult, TensorWriter, parent_tensors
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec
from fmforge.tensors.layout import open_tensors, parse_header

MANIFEST_FORMAT = 1
DEFAULT_BRANCH = "main"


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


@dataclass(frozen=True)
class _Plan:
    """Where a commit goes: its parents, the branch's head before it, and the branch move."""

    parents: tuple[str, ...]
    head: str | None
    version: int
    forked_from: tuple[str, str] | None = None
    dropped: tuple[str, ...] = ()


def _plan(
    repo: Repository,
    index: RefIndex,
    name: str,
    branch: str,
    parents: Iterable[str] | None,
    *,
    expected_head: str | None,
    force: bool,
    orphan: bool,
) -> _Plan:
    validate_model_name(name)
    validate_ref_name("branch", branch)
    version = repo.ledger.stream_version(STREAM_PREFIX + name)
    branches = index.branches(name) if version else {}
    head = branches.get(branch)
    if expected_head is not None and head != expected_head:
        raise BranchConflict(name, branch)
    forked = None
    if orphan:
        if parents:
            raise UsageError("--orphan starts a root commit: it takes no --parent")
        if head is not None:
            raise UsageError(
                f"branch {branch!r} of {name} exists: --orphan starts a new branch at a root"
            )
        return _Plan((), None, version)
    if parents is not None:
        resolved = tuple(dict.fromkeys(index.resolve(name, p) for p in parents))
    elif head is not None:
        resolved = (head,)
    else:
        default = index.default_branch(name) if version else None
        resolved = (branches[default],) if default is not None else ()
        forked = (default, branches[default]) if default is not None else None
    dropped: tuple[str, ...] = ()
    if head is not None and not any(index.is_ancestor(head, p) for p in resolved):
        kept = set().union(*(index.ancestors(p) for p in resolved)) if resolved else set()
        lost = [c.commit for c in index.all_commits(name) if c.commit in index.ancestors(head)]
        dropped = tuple(c for c in lost if c not in kept)
        if not force:
            raise BranchDiverged(
                name, branch, list(dropped),
                f"branch {branch!r} of {name} is at {head[:12]}, which the new commit does not "
                f"descend from: committing would drop {len(dropped)} commit(s) of its history "
                f"({', '.join(c[:12] for c in dropped[:3])}{', ...' if len(dropped) > 3 else ''})"
                f"; commit with --parent {branch}, or --force to rewrite the branch (recorded)",
            )  # fmt: skip
    return _Plan(resolved, head, version, forked, dropped)


@mediated("commit", targets.branch("name", "branch"))
def commit_model(
    repo: Repository,
    name: str,
    path: str | os.PathLike[str],
    message: str,
    *,
    branch: str = DEFAULT_BRANCH,
    parent: str | None = None,
    parents: Iterable[str] | None = None,
    expected_head: str | None = None,
    base: str | None = None,
    workers: int | None = None,
    force: bool = False,
    orphan: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> CommitResult:
    """Commit the weights file or model directory at ``path`` to ``name`` on ``branch``.

    ``path``: a ``.safetensors`` file, a Hugging Face model directory (safetensors shards or
    PyTorch ``.bin`` state dicts, config and tokenizer files), or a PEFT adapter directory.
    ``parent`` / ``parents``: REFs of the new commit's parents (default: the branch's head; for a
    new branch, the head of the model's default branch, ``main``). The branch's head must be
    among their ancestors unless ``force`` (a recorded rewrite); ``orphan``: a root commit on a
    new branch. ``base``: ``NAME@REF`` of the model an adapter adapts; recorded with the commit
    (for a PEFT adapter without it, ``base_model_name_or_path`` is used when it names a
    registered model). ``expected_head``: refuse (``BranchConflict``) unless the branch points
    at this commit when the commit is recorded, as ``git push --force-with-lease`` does.
    Without it, a commit still never lands on a branch that moved after its parent was read.
    ``workers``: threads encoding changed tensors (default: one per core).
    """
    validate_model_name(name)
    source_path = Path(path)
    index = repo.view(ModelRefs)
    wanted = [parent] if parent is not None else parents
    plan = _plan(
        repo, index, name, branch, wanted, expected_head=expected_head, force=force,
        orphan=orphan,
    )  # fmt: skip
    adapter = _adapter_info(source_path)
    adapts = _resolve_base(index, base, adapter)
    sources = source_files(source_path)
    parent_id = plan.parents[0] if plan.parents else None
    result = CommitResult(name, "", branch, plan.parents)
    files: list[dict[str, Any]] = []
    # Tensors are encoded in parallel already; BLAS threads on top would only spin.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ParentFiles(repo, parent_id) as parent_files,
        TensorWriter(
            repo, index, parent_tensors(repo, index, parent_id), parent_files, result, workers
        ) as writer,
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
                digest, created = repo.objects.put_new(source)
                size = source.stat().st_size
                writer.added(digest, size, created)
                entry = {"path": relative, "kind": "blob", "object": digest, "size": size}
            result.raw_bytes += int(entry["size"])
            files.append(entry)
        writer.finish()
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "files": files, "stored": writer.stored}
    if adapter is not None:
        manifest["adapter"] = adapter
    _record_commit(repo, name, message, plan, manifest, writer, result, adapts, provenance)
    remember(repo, result.commit, [p for _, p in sources if p.suffix == ".safetensors"])
    return result


@mediated("commit", targets.branch("name", "branch"))
def commit_tensors(
    repo: Repository,
    name: str,
    tensors: Mapping[str, Any],
    *,
    parents: Iterable[str] | None = None,
    message: str,
    provenance: Mapping[str, Any] | None = None,
    branch: str = DEFAULT_BRANCH,
    base: str | None = None,
    path: str = "model.safetensors",
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    orphan: bool = False,
) -> CommitResult:
    """Commit ``tensors`` (name -> torch tensor or numpy array) as one safetensors file at
    ``path``, without writing it anywhere first; branch semantics as ``commit_model``.

    ``parents``: REFs (default: the branch's head, or ``main``'s for a new branch); an
    unchanged tensor costs nothing and a changed one is stored as a delta against the first
    parent's tensor of the same name. ``provenance``: what produced these tensors (a run, a
    merge and its inputs), recorded with the commit.
    """
    validate_model_name(name)
    index = repo.view(ModelRefs)
    plan = _plan(repo, index, name, branch, parents, expected_head=None, force=force, orphan=orphan)
    entries = sorted((key, _tensor_bytes(key, value)) for key, value in tensors.items())
    header = safetensors_header([(key, spec, len(data)) for key, (spec, data) in entries], metadata)
    layout = parse_header(header, path)
    parent_id = plan.parents[0] if plan.parents else None
    result = CommitResult(name, "", branch, plan.parents)
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ParentFiles(repo, None) as parent_files,
        TensorWriter(
            repo, index, parent_tensors(repo, index, parent_id), parent_files, result, None
        ) as writer,
    ):
        header_digest, created = repo.objects.put_new(header)
        writer.added(header_digest, len(header), created)
        views = [data for _, (_, data) in entries]
        digests = writer.hash_all(views)
        for (key, (spec, data)), digest in zip(entries, digests, strict=True):
            writer.add(path, key, data, spec, digest)
        writer.finish()
    size = 8 + len(header) + layout.data_size
    result.raw_bytes = size
    by_name = dict(zip([k for k, _ in entries], digests, strict=True))
    files = [{
        "path": path, "kind": "safetensors", "header": header_digest, "size": size,
        "tensors": [[e.name, by_name[e.name]] for e in layout.entries],
    }]  # fmt: skip
    manifest = {"format": MANIFEST_FORMAT, "files": files, "stored": writer.stored}
    adapts = _resolve_base(index, base, None)
    _record_commit(repo, name, message, plan, manifest, writer, result, adapts, provenance)
    return result


_NUMPY_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32",
    "uint64": "U64", "bool": "BOOL",
}  # fmt: skip
_TORCH_DTYPES = {
    **_NUMPY_DTYPES, "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}  # fmt: skip


def _tensor_bytes(name: str, value: Any) -> tuple[TensorSpec, memoryview]:
    """(spec, little-endian bytes) of a torch tensor or numpy array, without a copy when it
    is contiguous already."""
    if not isinstance(name, str) or not name:
        raise InvalidTensor(f"tensor names are non-empty strings, got {name!r}")
    if isinstance(value, np.ndarray):
        dtype = _NUMPY_DTYPES.get(value.dtype.name)
        if dtype is None or value.dtype.byteorder == ">":
            raise InvalidTensor(f"tensor {name!r}: unsupported numpy dtype {value.dtype}")
        array = np.ascontiguousarray(value)
        return TensorSpec(dtype, tuple(array.shape)), array.reshape(-1).view(np.uint8).data
    torch_dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    if torch_dtype not in _TORCH_DTYPES or not hasattr(value, "detach"):
        raise InvalidTensor(
            f"tensor {name!r}: expected a torch tensor or numpy array, got {type(value).__name__}"
        )
    import torch

    flat = value.detach().to("cpu").contiguous().reshape(-1)
    data: np.ndarray[Any, Any] = (
        flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
    )
    return TensorSpec(_TORCH_DTYPES[torch_dtype], tuple(value.shape)), data.data


def safetensors_header(
    tensors: Iterable[tuple[str, TensorSpec, int]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A safetensors header for (name, spec, nbytes) in this buffer order, padded with spaces
    to a multiple of 8 bytes as the reference writer does."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, spec, nbytes in tensors:
        end = offset + nbytes
        header[name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, end],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-(len(text) + len(struct.pack("<Q", 0))) % 8)


def _record_commit(
    repo: Repository,
    name: str,
    message: str,
    plan: _Plan,
    manifest: dict[str, Any],
    writer: TensorWriter,
    result: CommitResult,
    adapts: str | None,
    provenance: Mapping[str, Any] | None,
) -> None:
    """Store the manifest, then record the commit and its branch move in one guarded append."""
    manifest_digest = repo.objects.put(canonical_json(manifest, "manifest"))
    new_objects = writer.new_objects
    result.stored_bytes += sum(new_objects.values())  # sizes known when put: no re-reads
    new_objects[manifest_digest] = 0
    now, author = utc_now(), repo.principal
    commit_id = blake3.blake3(
        canonical_json(
            {"model": name, "parents": list(plan.parents), "manifest": manifest_digest,
             "message": message, "time": now, "actor": author},
            "commit",
        )
    ).hexdigest()  # fmt: skip
    result.commit = commit_id
    result.forked_from, result.dropped = plan.forked_from, plan.dropped
    data: dict[str, Any] = {
        "model": name, "commit": commit_id, "parents": list(plan.parents),
        "manifest": manifest_digest, "message": message, "branch": result.branch,
        "tensors": result.tensors, "raw_bytes": result.raw_bytes,
        "stored_bytes": result.stored_bytes, "time": now, "author": author,
    }  # fmt: skip
    if adapts is not None:
        data["base"] = adapts
    if provenance:
        data["provenance"] = dict(provenance)
    why = "force" if plan.dropped else "commit"
    events = [
        ModelCommitted(data, refs=sorted(new_objects)),  # type: ignore[arg-type]
        branch_event(name, result.branch, commit_id, plan.head, why, plan.dropped),
    ]
    try:
        repo.record(STREAM_PREFIX + name, events, expected_version=plan.version)
    except StreamVersionConflict:
        raise BranchConflict(name, result.branch) from None


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
        except (ModelNotFound, RefNotFound, InvalidName):
            return None  # a hub id or a path: kept in the manifest's adapter record
    return None


def branch_event(
    model: str,
    branch: str,
    commit: str,
    previous: str | None,
    why: str,
    dropped: Iterable[str] = (),
) -> NewEvent:
    if previous is None:
        return BranchCreated({"model": model, "branch": branch, "commit": commit})
    data: dict[str, Any] = {
        "model": model, "branch": branch, "commit": commit, "previous": previous, "reason": why,
    }  # fmt: skip
    dropped = list(dropped)
    if dropped:
        data["dropped"] = dropped
    return BranchMoved(data)  # type: ignore[arg-type]


def _commit_safetensors(writer: TensorWriter, relative: str, source: Path) -> dict[str, Any]:
    with open_tensors(source) as (layout, views):
        header_digest, created = writer.repo.objects.put_new(layout.header)
        writer.added(header_digest, len(layout.header), created)
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


def _commit_torch(writer: TensorWriter, relative: str, source: Path) -> dict[str, Any]:
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
