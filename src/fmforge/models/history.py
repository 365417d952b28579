"""One model's history folded straight from its ledger stream, not from the views.

What push and pull compare with the other side, and what checkout, ``open_model`` and
``load_state_dict`` confirm their resolution against: a read model (``views.db``) edited by hand
can make them refuse (``ViewMismatch``), never hand out another version marked verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fmforge.errors import RefNotFound, ViewMismatch
from fmforge.ledger import Event
from fmforge.models.refs import STREAM_PREFIX, resolve_ref
from fmforge.repository import Repository

Record = dict[str, Any]


def event_record(event: Event) -> Record:
    """An event as it travels to a remote: ids, type, payload, refs and who/when."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "data": event.data,
        "refs": list(event.refs),
        "meta": {
            k: v
            for k, v in event.meta.items()
            if k in ("actor", "time", "origin_time", "origin_actor")
        },
    }


@dataclass
class ModelHistory:
    version: int = 0
    commits: dict[str, Record] = field(default_factory=dict)  # commit id -> its event record
    order: list[str] = field(default_factory=list)  # commit ids in recording order
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    branch_log: list[tuple[str, str, str]] = field(default_factory=list)  # branch, commit, time

    @classmethod
    def fold(cls, records: Iterable[Record]) -> ModelHistory:
        history = cls()
        for record in records:
            history.version += 1
            history.event_ids.add(record["event_id"])
            data = record["data"]
            kind = record["type"]
            if kind == "ModelCommitted":
                history.commits[data["commit"]] = record
                history.order.append(data["commit"])
            elif kind in ("BranchCreated", "BranchMoved"):
                history.branches[data["branch"]] = data["commit"]
                time = str(record.get("meta", {}).get("time", ""))
                history.branch_log.append((data["branch"], data["commit"], time))
            elif kind == "BranchDeleted":
                history.branches.pop(data["branch"], None)
            elif kind == "TagCreated":
                history.tags[data["tag"]] = data["commit"]
        return history

    @classmethod
    def of(cls, repo: Repository, model: str) -> ModelHistory:
        return cls.fold(event_record(e) for e in repo.ledger.read_stream(STREAM_PREFIX + model))

    def ancestors(self, commit: str) -> set[str]:
        """``commit`` and every commit reachable through parents (all of them, merges too)."""
        seen: set[str] = set()
        stack = [commit]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.commits:
                continue
            seen.add(current)
            stack.extend(self.commits[current]["data"]["parents"])
        return seen

    def resolve(self, model: str, ref: str) -> str:
        """The commit a REF names, by the same grammar as the view's ``RefIndex.resolve``."""

        def named(name: str) -> str:
            if name in self.branches:
                return self.branches[name]
            if name in self.tags:
                return self.tags[name]
            hits = [c for c in self.order if c.startswith(name)] if len(name) >= 4 else []
            if len(hits) == 1:
                return hits[0]
            raise RefNotFound(f"{model} has no branch, tag or commit {name!r}")

        def branch_at(branch: str, moment: str) -> str | None:
            found = None
            for name, commit, time in self.branch_log:
                if name == branch and time <= moment:
                    found = commit
            return found

        def parents(commit: str) -> tuple[str, ...]:
            return tuple(self.commits[commit]["data"]["parents"])

        return resolve_ref(model, ref, named=named, branch_at=branch_at, parents=parents)


def confirm(repo: Repository, model: str, ref: str, commit: str, manifest: str) -> None:
    """Raise ``ViewMismatch`` unless the ledger resolves ``model@ref`` to ``commit``, recorded
    with ``manifest``, as the view did."""
    history = ModelHistory.of(repo, model)
    try:
        expected = history.resolve(model, ref)
    except RefNotFound:
        expected = None
    if expected != commit:
        where = expected[:12] if expected else "nothing"
        raise ViewMismatch(
            "model_refs", f"{model}@{ref} is {commit[:12]} in the view, {where} in the ledger"
        )
    recorded = history.commits[commit]["data"]["manifest"]
    if recorded != manifest:
        raise ViewMismatch(
            "model_refs", f"commit {commit[:12]} of {model} has another manifest in the ledger"
        )
