"""Moving refs: new branches, tags, resets and deletions (each an event; history stays)."""

from __future__ import annotations

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import BranchConflict, BranchDiverged, RefNotFound, StreamVersionConflict
from fmforge.hints import did_you_mean
from fmforge.ledger import NewEvent
from fmforge.models.events import BranchCreated, BranchDeleted, BranchMoved, TagCreated
from fmforge.models.names import validate_model_name, validate_ref_name
from fmforge.models.refs import STREAM_PREFIX, ModelRefs, RefIndex
from fmforge.repository import Repository


def _record(repo: Repository, model: str, event: NewEvent, version: int, name: str) -> None:
    try:
        repo.record(STREAM_PREFIX + model, event, expected_version=version)
    except StreamVersionConflict:
        raise BranchConflict(model, name) from None


@mediated("branch", targets.branch())
def create_branch(repo: Repository, model: str, branch: str, ref: str = "main") -> str:
    """Create ``branch`` at the commit ``ref`` names; returns that commit id."""
    return _create_ref(repo, model, "branch", branch, ref)


@mediated("tag", targets.tag())
def create_tag(repo: Repository, model: str, tag: str, ref: str = "main") -> str:
    """Tag the commit ``ref`` names; tags never move."""
    return _create_ref(repo, model, "tag", tag, ref)


def _create_ref(repo: Repository, model: str, kind: str, name: str, ref: str) -> str:
    validate_model_name(model)
    validate_ref_name(kind, name)
    index = repo.view(ModelRefs)
    version = repo.ledger.stream_version(STREAM_PREFIX + model)
    commit = index.resolve(model, ref)
    existing = index.branches(model) if kind == "branch" else index.tags(model)
    if name in existing:
        hint = "use reset to move it" if kind == "branch" else "tags do not move"
        raise RefNotFound(f"{model} already has a {kind} {name!r} ({hint})")
    if kind == "branch":
        event = BranchCreated({"model": model, "branch": name, "commit": commit})
    else:
        event = TagCreated({"model": model, "tag": name, "commit": commit})
    _record(repo, model, event, version, name)
    return commit


def _only_reachable_from(index: RefIndex, model: str, head: str, others: list[str]) -> list[str]:
    """Commits reachable from ``head`` and from none of ``others``, newest first."""
    kept: set[str] = set()
    for other in others:
        kept |= index.ancestors(other)
    mine = index.ancestors(head)
    return [c.commit for c in index.all_commits(model) if c.commit in mine - kept]


@mediated("branch", targets.branch())
def reset_branch(repo: Repository, model: str, branch: str, ref: str) -> str:
    """Point ``branch`` at the commit ``ref`` names, as ``git reset --hard`` does: a recorded
    move naming the commits the branch no longer reaches (history stays in the ledger)."""
    validate_model_name(model)
    index = repo.view(ModelRefs)
    version = repo.ledger.stream_version(STREAM_PREFIX + model)
    previous = index.branches(model).get(branch)
    if previous is None:
        hint = did_you_mean(branch, index.branches(model))
        raise RefNotFound(f"{model} has no branch {branch!r}{hint}")
    commit = index.resolve(model, ref)
    dropped = _only_reachable_from(index, model, previous, [commit])
    data = {
        "model": model, "branch": branch, "commit": commit, "previous": previous,
        "reason": "reset",
    }  # fmt: skip
    if dropped:
        data["dropped"] = dropped  # type: ignore[assignment]
    _record(repo, model, BranchMoved(data), version, branch)  # type: ignore[arg-type]
    return commit


@mediated("branch", targets.branch())
def delete_branch(repo: Repository, model: str, branch: str, *, force: bool = False) -> str:
    """Delete ``branch`` (``git branch -d``); returns where it pointed. Refused when commits
    would then be reachable from no branch or tag (gc would prune them), unless ``force``."""
    validate_model_name(model)
    index = repo.view(ModelRefs)
    version = repo.ledger.stream_version(STREAM_PREFIX + model)
    branches = index.branches(model)
    head = branches.get(branch)
    if head is None:
        raise RefNotFound(f"{model} has no branch {branch!r}{did_you_mean(branch, branches)}")
    others = [c for b, c in branches.items() if b != branch] + list(index.tags(model).values())
    orphaned = _only_reachable_from(index, model, head, others)
    if orphaned and not force:
        raise BranchDiverged(
            model, branch, orphaned,
            f"branch {branch!r} of {model} holds {len(orphaned)} commit(s) no other branch or "
            f"tag reaches ({', '.join(c[:12] for c in orphaned[:3])}); gc would prune them: "
            "merge or tag them first, or delete with -D",
        )  # fmt: skip
    event = BranchDeleted({"model": model, "branch": branch, "commit": head})
    _record(repo, model, event, version, branch)
    return head
