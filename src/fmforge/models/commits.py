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

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import orjson
from threadpoolctl import threadpool_limits

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import (
    BranchConflict,
    BranchDiverged,
    InvalidModelSource,
    InvalidName,
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
from fmforge.tensors.layout import open_tensors

MANIFEST_FORMAT = 1
DEFAULT_BRANCH = "main"


def _adapter_info(path: Path) -> dict[str, Any] | None:
    """``adapter_config.json`` of a PEFT adapter directory, if ``path`` is one."""
    config = path / "adapter_config.json" if path.is_dir() else None
    if config is None or not config.is_file():
        return None
    return adapter_record(config.read_bytes(), str(config))


def adapter_record(content: bytes, where: str) -> dict[str, Any]:
    """What a manifest keeps of a PEFT ``adapter_config.json`` (the file itself is a blob)."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InvalidModelSource(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidModelSource(f"{where}: expected a JSON object")
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
        resolved = tuple(dict.fromkeys(_resolve_parent(index, name, p) for p in parents))
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


def _resolve_parent(index: RefIndex, name: str, parent: str) -> str:
    """A REF of model ``name``, or the full id of a commit of any model (a merge or a rebase
    descends from other models' commits: an adapter's base, the inputs of a merge)."""
    if _FULL_ID.fullmatch(parent):
        try:
            return index.commit(parent).commit
        except RefNotFound:
            pass
    return index.resolve(name, parent)


_FULL_ID = re.compile(r"[0-9a-f]{64}")


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
