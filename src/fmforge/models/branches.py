"""Moving refs: new branches, tags, and resets (a rollback is an event; nothing is deleted)."""

from __future__ import annotations

import re

from fmforge.errors import BranchConflict, RefNotFound, StreamVersionConflict
from fmforge.ledger import NewEvent
from fmforge.models.commits import refs
from fmforge.models.refs import STREAM_PREFIX, validate_model_name
from fmforge.repository import Repository

_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}\Z")


def _ref_name(kind: str, name: str) -> str:
    if not _REF_NAME.match(name) or ".." in name or re.fullmatch(r"[0-9a-f]{4,64}", name):
        raise RefNotFound(
            f"invalid {kind} name {name!r}: letters, digits and '._-/', not a hex commit prefix"
        )
    return name


def _record(repo: Repository, model: str, event: NewEvent, version: int) -> None:
    try:
        repo.ledger.append(STREAM_PREFIX + model, event, expected_version=version)
    except StreamVersionConflict:
        raise BranchConflict(model, str(event.data.get("branch") or event.data["tag"])) from None
    refs(repo)


def create_branch(repo: Repository, model: str, branch: str, ref: str = "main") -> str:
    """Create ``branch`` at the commit ``ref`` names; returns that commit id."""
    return _create_ref(repo, model, "branch", branch, ref)


def create_tag(repo: Repository, model: str, tag: str, ref: str = "main") -> str:
    """Tag the commit ``ref`` names; tags never move."""
    return _create_ref(repo, model, "tag", tag, ref)


def _create_ref(repo: Repository, model: str, kind: str, name: str, ref: str) -> str:
    validate_model_name(model)
    _ref_name(kind, name)
    index = refs(repo)
    version = repo.ledger.stream_version(STREAM_PREFIX + model)
    commit = index.resolve(model, ref)
    existing = index.branches(model) if kind == "branch" else index.tags(model)
    if name in existing:
        hint = "use reset to move it" if kind == "branch" else "tags do not move"
        raise RefNotFound(f"{model} already has a {kind} {name!r} ({hint})")
    event_type = "BranchCreated" if kind == "branch" else "TagCreated"
    event = NewEvent(event_type, {"model": model, kind: name, "commit": commit})
    _record(repo, model, event, version)
    return commit


def reset_branch(repo: Repository, model: str, branch: str, ref: str) -> str:
    """Point ``branch`` at the commit ``ref`` names (a recorded move; history stays)."""
    validate_model_name(model)
    index = refs(repo)
    version = repo.ledger.stream_version(STREAM_PREFIX + model)
    previous = index.branches(model).get(branch)
    if previous is None:
        raise RefNotFound(f"{model} has no branch {branch!r}")
    commit = index.resolve(model, ref)
    event = NewEvent(
        "BranchMoved",
        {"model": model, "branch": branch, "commit": commit, "previous": previous,
         "reason": "reset"},
    )  # fmt: skip
    _record(repo, model, event, version)
    return commit
