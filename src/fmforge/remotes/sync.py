"""push, pull and clone of models between this repository and a remote.

A transfer sends the objects first (only those the other side lacks), then the events: the
``ModelCommitted`` events with their original ids, and a branch move. So the other side never
records a commit whose objects are missing, and running an interrupted transfer again resends
nothing it already has. A branch only moves forward: a push whose remote branch holds commits
missing here (or a pull whose local branch holds commits missing there) is refused with
``NonFastForward`` and changes nothing on that branch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import NonFastForward, RemoteError, RemoteNotFound, RepositoryExists
from fmforge.hints import did_you_mean
from fmforge.ledger import NewEvent
from fmforge.models.commits import branch_event
from fmforge.models.events import TagCreated
from fmforge.models.history import ModelHistory, Record
from fmforge.models.names import validate_model_name
from fmforge.models.refs import STREAM_PREFIX
from fmforge.models.writer import manifest_objects
from fmforge.objects import ObjectStore
from fmforge.remotes.backends import RemoteBackend, open_backend, record_event
from fmforge.repository import DIRNAME, Repository

REMOTES_FILE = "remotes.json"
Progress = Callable[[str, int, int], None]  # (what, done, total)


# ---- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint_url: str | None = None


def _remotes_path(repo: Repository) -> Path:
    return repo.path / REMOTES_FILE


@mediated("read_meta", targets.fixed("repository"))
def list_remotes(repo: Repository) -> dict[str, Remote]:
    path = _remotes_path(repo)
    if not path.exists():
        return {}
    entries = json.loads(path.read_text())
    return {name: Remote(name, **entry) for name, entry in sorted(entries.items())}


@mediated("admin", targets.fixed("repository"))
def add_remote(repo: Repository, name: str, url: str, endpoint_url: str | None = None) -> Remote:
    validate_model_name(name)  # the same alphabet as model names
    remotes = list_remotes(repo)
    if name in remotes:
        raise RemoteError(f"remote {name!r} exists already ({remotes[name].url})")
    if not url.startswith("s3://") and "://" in url and not url.startswith("file://"):
        raise RemoteError(f"unsupported remote URL {url!r}: use a directory or s3://BUCKET/PREFIX")
    if not url.startswith(("s3://", "file://")):
        url = str(Path(url).expanduser().resolve())
    remotes[name] = Remote(name, url, endpoint_url)
    _save(repo, remotes)
    return remotes[name]


@mediated("admin", targets.fixed("repository"))
def remove_remote(repo: Repository, name: str) -> None:
    remotes = list_remotes(repo)
    if name not in remotes:
        raise RemoteNotFound(f"no remote named {name!r}{did_you_mean(name, remotes)}")
    del remotes[name]
    _save(repo, remotes)


def _save(repo: Repository, remotes: dict[str, Remote]) -> None:
    body = {r.name: {"url": r.url, "endpoint_url": r.endpoint_url} for r in remotes.values()}
    tmp = _remotes_path(repo).with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(_remotes_path(repo))


def get_remote(repo: Repository, name: str) -> Remote:
    remotes = list_remotes(repo)
    if name not in remotes:
        known = ", ".join(remotes) or "none; add one with `fmforge remote add NAME URL`"
        hint = did_you_mean(name, remotes)
        raise RemoteNotFound(f"no remote named {name!r}{hint} (remotes: {known})")
    return remotes[name]


def _open(repo: Repository, name: str, *, create: bool) -> RemoteBackend:
    remote = get_remote(repo, name)
    endpoint = remote.endpoint_url or repo.settings["objects.s3_endpoint_url"] or None
    return open_backend(remote.url, endpoint_url=endpoint, create=create)


def _local_history(repo: Repository, model: str) -> ModelHistory:
    return ModelHistory.of(repo, model)


def _is_ancestor(history: ModelHistory, older: str, newer: str) -> bool:
    return older in history.ancestors(newer)


# ---- transfer ---------------------------------------------------------------------------------


@dataclass
class TransferResult:
    model: str
    commits: int = 0  # commits the other side did not have
    objects: int = 0  # objects sent
    bytes: int = 0
    skipped_objects: int = 0  # already there (a resumed transfer skips what it sent)
    branches: dict[str, str] = field(default_factory=dict)  # branch -> new head
    tags: list[str] = field(default_factory=list)


def _copy_objects(
    source: ObjectStore,
    target: ObjectStore,
    digests: Iterable[str],
    result: TransferResult,
    progress: Progress | None,
) -> None:
    wanted = sorted(set(digests))
    for done, digest in enumerate(wanted, start=1):
        if target.has(digest):
            result.skipped_objects += 1
        else:
            with source.open(digest) as reader:  # streamed and verified against its digest
                stored = target.put(reader)
            if stored != digest:
                raise RemoteError(f"object {digest} arrived as {stored}")
            result.objects += 1
            result.bytes += target.size(digest)
        if progress is not None:
            progress("objects", done, len(wanted))


def _commit_objects(objects: ObjectStore, record: Record) -> set[str]:
    manifest_digest = record["data"]["manifest"]
    manifest: dict[str, Any] = orjson.loads(objects.get(manifest_digest))
    return manifest_objects(manifest_digest, manifest)


def _missing_commits(source: ModelHistory, heads: Iterable[str], target: ModelHistory) -> list[str]:
    """Commits reachable from ``heads`` that ``target`` lacks, in the source's recording order."""
    wanted: set[str] = set()
    for head in heads:
        wanted |= source.ancestors(head)
    return [c for c in source.order if c in wanted and c not in target.commits]


def _send(
    model: str,
    source: ModelHistory,
    source_objects: ObjectStore,
    target: ModelHistory,
    target_objects: ObjectStore,
    heads: Iterable[str],
    result: TransferResult,
    progress: Progress | None,
) -> list[NewEvent]:
    """Copy the objects of every commit reachable from ``heads`` that ``target`` lacks; return
    the events that record those commits (ids kept) and the tags that can follow them."""
    missing = _missing_commits(source, heads, target)
    result.commits = len(missing)
    needed = {c: _commit_objects(source_objects, source.commits[c]) for c in missing}
    _copy_objects(source_objects, target_objects, set().union(*needed.values()), result, progress)
    events = [
        record_event(source.commits[c], needed[c])
        for c in missing
        if source.commits[c]["event_id"] not in target.event_ids
    ]
    present = set(target.commits) | set(missing)
    for tag, commit in sorted(source.tags.items()):
        if tag not in target.tags and commit in present:
            events.append(TagCreated({"model": model, "tag": tag, "commit": commit}))
            result.tags.append(tag)
    return events


def _branch_names(history: ModelHistory, branch: str | None, where: str, model: str) -> list[str]:
    if not history.commits:
        raise RemoteError(f"{where} has no model named {model!r}")
    if branch is not None and branch not in history.branches:
        raise RemoteError(f"{where} has no branch {branch!r} of {model!r}")
    return [branch] if branch is not None else sorted(history.branches)


@mediated("export", targets.model_name("model"))
def push(
    repo: Repository,
    remote: str,
    model: str,
    *,
    branch: str | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Send ``model``'s ``branch`` (default: every branch) and its tags to ``remote``."""
    validate_model_name(model)
    get_remote(repo, remote)
    stream = STREAM_PREFIX + model
    local = _local_history(repo, model)
    names = _branch_names(local, branch, "this repository", model)
    backend = _open(repo, remote, create=True)
    result = TransferResult(model)
    try:
        theirs = ModelHistory.fold(backend.read_stream(stream))
        moves: list[NewEvent] = []
        for name in names:
            head, remote_head = local.branches[name], theirs.branches.get(name)
            if remote_head == head:
                continue
            if remote_head is not None and not _is_ancestor(local, remote_head, head):
                raise NonFastForward(
                    f"push of {model} {name} refused: the remote's {name} is at "
                    f"{remote_head[:12]}, which is not in this {name}'s history; pull first"
                )
            moves.append(branch_event(model, name, head, remote_head, "push"))
            result.branches[name] = head
        heads = [local.branches[n] for n in names]
        events = _send(model, local, repo.objects, theirs, backend.objects, heads, result, progress)
        if events or moves:
            backend.append(stream, [*events, *moves], theirs.version)
    finally:
        backend.close()
    return result


@mediated("commit", targets.model_name("model"))
def pull(
    repo: Repository,
    remote: str,
    model: str,
    *,
    branch: str | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Fetch ``model``'s commits from ``remote`` and fast-forward ``branch`` (default: every
    branch there). Commits are fetched even when a branch cannot move; a diverged branch raises
    ``NonFastForward`` after the fetch, naming the remote head to branch from."""
    validate_model_name(model)
    stream = STREAM_PREFIX + model
    backend = _open(repo, remote, create=False)
    result = TransferResult(model)
    try:
        theirs = ModelHistory.fold(backend.read_stream(stream))
        names = _branch_names(theirs, branch, f"remote {remote!r}", model)
        local = _local_history(repo, model)
        heads = [theirs.branches[n] for n in names] + list(theirs.tags.values())
        events = _send(model, theirs, backend.objects, local, repo.objects, heads, result, progress)
        both = ModelHistory(commits={**local.commits, **theirs.commits})
        diverged = []
        for name in names:
            ours, remote_head = local.branches.get(name), theirs.branches[name]
            if ours == remote_head or (ours is not None and _is_ancestor(both, remote_head, ours)):
                continue  # up to date, or ahead
            if ours is not None and not _is_ancestor(both, ours, remote_head):
                diverged.append(f"{name} (theirs: {remote_head[:12]})")
                continue
            events.append(branch_event(model, name, remote_head, ours, "pull"))
            result.branches[name] = remote_head
        if events:
            repo.record(stream, events, expected_version=local.version)
    finally:
        backend.close()
    if diverged:
        raise NonFastForward(
            f"fetched {result.commits} commits of {model}, but these branches have diverged and "
            f"did not move: {', '.join(diverged)}; create a branch at their commit to compare"
        )
    return result


def clone(
    url: str,
    directory: str | Path,
    *,
    endpoint_url: str | None = None,
    models: list[str] | None = None,
    progress: Progress | None = None,
) -> list[TransferResult]:
    """A new repository at ``directory`` with remote ``origin`` = ``url`` and its models."""
    target = Path(directory)
    if (target / DIRNAME).exists():
        raise RepositoryExists(f"{target} holds a repository already")
    backend = open_backend(url, endpoint_url=endpoint_url, create=False)
    try:
        available = [s.removeprefix(STREAM_PREFIX) for s in backend.model_streams()]
    finally:
        backend.close()
    wanted = models if models is not None else available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise RemoteError(f"remote {url} has no model(s) {', '.join(unknown)}")
    target.mkdir(parents=True, exist_ok=True)
    with Repository.init(target) as repo:
        add_remote(repo, "origin", url, endpoint_url)
        return [pull(repo, "origin", name, progress=progress) for name in wanted]
