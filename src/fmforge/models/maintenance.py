"""Registry upkeep: which objects gc may prune, and verification by rebuilding tensors."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fmforge.errors import CorruptTensor
from fmforge.models.checkout import CommitReader
from fmforge.models.fishers import ModelFishers
from fmforge.models.refs import ModelRefs, RefIndex
from fmforge.models.storage import StoredTensor, load_tensor
from fmforge.models.writer import load_manifest, manifest_objects
from fmforge.repository import Repository


def _cutoff(retention_s: float) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=retention_s)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def retained_commits(index: RefIndex, model: str, retention_s: float) -> set[str]:
    """Commits of ``model`` gc must keep: reachable (through every parent) from a branch or a
    tag, recorded within the retention window, or pointed at by a branch within it."""
    cutoff = _cutoff(retention_s)
    commits = {info.commit: info for info in index.all_commits(model)}
    roots = set(index.branches(model).values()) | set(index.tags(model).values())
    roots |= {c for c, info in commits.items() if info.time >= cutoff}
    rows = index.db.execute(
        "SELECT commit_id FROM model_branch_log WHERE model = ? AND time >= ?", (model, cutoff)
    )
    roots |= {row[0] for row in rows}
    kept: set[str] = set()
    stack = list(roots)
    while stack:
        commit = stack.pop()
        if commit in kept or commit not in commits:
            continue
        kept.add(commit)
        stack.extend(commits[commit].parents)
    return kept


def prunable_objects(repo: Repository, retention_s: float) -> tuple[set[str], list[str]]:
    """(objects only unretained commits need, those commits)."""
    index = repo.view(ModelRefs)
    keep: set[str] = set()
    candidates: set[str] = set()
    dropped: list[str] = []
    fishers = repo.view(ModelFishers)
    for model in index.models():
        retained = retained_commits(index, model, retention_s)
        keep |= fishers.objects_of(retained)  # a Fisher lives as long as its commit
        for info in index.all_commits(model):
            needed = manifest_objects(info.manifest, load_manifest(repo, info.manifest))
            if info.commit in retained:
                keep |= needed
            else:
                candidates |= needed
                dropped.append(info.commit)
    candidates |= fishers.objects_of(set(dropped))
    # an object some other event refers to (a dataset, a run) stays whatever the models say
    from fmforge.views import ObjectRefs

    keep |= repo.view(ObjectRefs).outside_models()
    return candidates - keep, dropped


@dataclass(frozen=True)
class TensorCheck:
    commits: int
    tensors: int  # distinct tensors rebuilt and hash-checked
    skipped_commits: int  # commits whose objects gc pruned on purpose


def verify_tensors(
    repo: Repository,
    *,
    quick: bool = False,
    sample: int = 64,
    on_tensor: Callable[[str], None] | None = None,
) -> TensorCheck:
    """Rebuild every distinct tensor of every commit (``quick``: a random sample of ``sample``)
    through its delta chain and check its raw hash. Raises at the first fault: ``CorruptTensor``
    naming the commit, or ``ObjectNotFound``."""
    index = repo.view(ModelRefs)
    pruned = repo.pruned_objects()
    work: dict[str, tuple[str, StoredTensor, CommitReader]] = {}
    commits = skipped = 0
    for model in index.models():
        for info in index.all_commits(model):
            if info.manifest in pruned:  # gc pruned this commit on purpose
                skipped += 1
                continue
            commits += 1
            reader = CommitReader(repo, f"{model}@{info.commit}")
            for _name, raw_hash, _spec in reader.tensors():
                work.setdefault(
                    raw_hash, (f"{model}@{info.commit[:12]}", reader.stored[raw_hash], reader)
                )
    chosen = sorted(work)
    if quick and len(chosen) > sample:
        chosen = sorted(random.Random().sample(chosen, sample))
    for raw_hash in chosen:
        where, stored, reader = work[raw_hash]
        try:
            load_tensor(repo.objects, stored, reader.lookup)
        except CorruptTensor as exc:
            raise CorruptTensor(f"{where}: {exc}") from None
        if on_tensor is not None:
            on_tensor(raw_hash)
    return TensorCheck(commits, len(chosen), skipped)
