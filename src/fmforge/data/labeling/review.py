"""The review loop of synthesized LFs: accept or reject each proposal; use the accepted set.

Every LF ``synthesize`` writes is proposed once per intent and example set
(``LabelingFunctionProposed``). A reviewer's verdict is a ``LabelingFunctionReviewed`` event
naming the proposal, the verdict and the reviewer (the repository's principal); the latest
verdict stands. A rejected LF is never proposed again for the same intent and examples:
``synthesize`` drops it before choosing, and chooses among the rest. The accepted LFs of a
dataset form an LF set like a hand-written file (``accepted_spec``: the YAML; ``accepted_lfs``:
the LFs, versioned by their definitions exactly as if written by hand), used by
``fmforge label apply|analyze|model|... --lfs accepted`` or written to a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import LabelingFunctionReviewed
from fmforge.data.labeling.functions import LabelingFunction, parse_lfs
from fmforge.data.names import validate_dataset_name
from fmforge.data.versions import STREAM_PREFIX, dataset_log
from fmforge.data.views import Proposal, SynthWork
from fmforge.errors import LabelingError
from fmforge.repository import Repository

ACCEPTED = "accepted"  # what `--lfs` takes to mean a dataset's accepted LFs


@mediated("read_meta", targets.dataset_name("dataset"))
def proposals(repo: Repository, dataset: str, status: str | None = None) -> list[Proposal]:
    """The LFs proposed for ``dataset`` (pending, accepted, rejected), oldest first."""
    dataset = validate_dataset_name(dataset.partition("@")[0])
    dataset_log(repo, dataset)  # refuses an unknown dataset
    return repo.view(SynthWork).proposals(dataset, status)


def find(repo: Repository, dataset: str, wanted: str) -> Proposal:
    """The proposal ``wanted`` names: a proposal id prefix (4 or more hex digits) or an LF
    name (the newest proposal of that name, when only one is pending or the name is unique)."""
    every = proposals(repo, dataset)
    by_id = [p for p in every if len(wanted) >= 4 and p.proposal.startswith(wanted)]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise LabelingError(f"{wanted!r} names {len(by_id)} proposals; give more of the id")
    named = [p for p in every if p.name == wanted]
    pending = [p for p in named if p.status == "pending"]
    if len(named) == 1 or len(pending) == 1:
        return (pending or named)[0]
    if named:
        ids = ", ".join(p.proposal[:8] for p in named)
        raise LabelingError(f"{len(named)} proposals are named {wanted!r} ({ids}); give an id")
    raise LabelingError(
        f"no proposed LF {wanted!r} for dataset {dataset!r} (see `fmforge label review {dataset}`)"
    )


@mediated("label", targets.dataset_name("dataset"))
def review(
    repo: Repository,
    dataset: str,
    *,
    accept: Sequence[str] = (),
    reject: Sequence[str] = (),
    note: str = "",
) -> list[tuple[str, Proposal]]:
    """Record a verdict for each proposal named (ids or LF names) by the current principal,
    all at once; returns (verdict, proposal) of each. Nothing is recorded if a name is wrong."""
    dataset = validate_dataset_name(dataset.partition("@")[0])
    verdicts: dict[str, tuple[str, Proposal]] = {}
    for verdict, names in (("accept", accept), ("reject", reject)):
        for wanted in names:
            found = find(repo, dataset, wanted)
            if found.proposal in verdicts and verdicts[found.proposal][0] != verdict:
                raise LabelingError(f"{wanted!r} is both accepted and rejected")
            verdicts[found.proposal] = (verdict, found)
    if not verdicts:
        raise LabelingError("name the proposals to accept or reject")
    if len(note) > 4096:
        raise LabelingError("the note is longer than 4,096 characters")
    events = [
        LabelingFunctionReviewed({"proposal": pid, "verdict": verdict,
                                  "reviewer": repo.principal, "note": note})
        for pid, (verdict, _) in verdicts.items()
    ]  # fmt: skip
    repo.record(STREAM_PREFIX + dataset, events)
    return list(verdicts.values())


def accepted_spec(repo: Repository, dataset: str) -> dict[str, Any]:
    """The accepted LFs of ``dataset`` as an LF file's content (``labels``, ``column``,
    ``lfs``), in the order they were proposed; refused when they cannot form one set."""
    accepted = proposals(repo, dataset, "accepted")
    if not accepted:
        raise LabelingError(
            f"dataset {dataset!r} has no accepted LFs (see `fmforge label review {dataset}`)"
        )
    first = accepted[0]
    entries: list[dict[str, Any]] = []
    seen: dict[str, Proposal] = {}
    versions: set[str] = set()
    for p in accepted:
        if p.labels != first.labels or p.column != first.column:
            raise LabelingError(
                f"accepted LFs {first.name} ({first.proposal[:8]}) and {p.name} "
                f"({p.proposal[:8]}) vote over different labels or columns; reject one"
            )
        if p.lf_version in versions:
            continue  # the same LF accepted for another intent or example set
        if p.name in seen:
            raise LabelingError(
                f"accepted LFs {p.name} ({seen[p.name].proposal[:8]}) and {p.name} "
                f"({p.proposal[:8]}) differ under one name; reject one"
            )
        seen[p.name] = p
        versions.add(p.lf_version)
        entries.append(p.lf)
    defaults = [e for e in entries if "default" in e]
    entries = [e for e in entries if "default" not in e] + defaults  # the default rule last
    return {"labels": list(first.labels), "column": first.column, "lfs": entries}


def accepted_lfs(repo: Repository, dataset: str) -> list[LabelingFunction]:
    """The accepted LFs of ``dataset``, built and checked as a hand-written file would be."""
    name = validate_dataset_name(dataset.partition("@")[0])
    return parse_lfs(accepted_spec(repo, name), f"the accepted LFs of {name}")
