"""The review loop of cleaning: what a cleaning changed, and reviewers' verdicts on each change.

A reviewer accepts a change or overrides it; the verdict is a ``CleaningReviewed`` event on the
dataset's stream carrying the row id, the rule and the reviewer (the ledger's actor). The last
verdict on a (row, kind of rule) pair stands. ``apply_cleaning`` reads the overrides and leaves
those rows as they were, so re-applying the same rules keeps every human decision.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import CleaningReviewed
from fmforge.data.storage import ROW_ID
from fmforge.data.versions import STREAM_PREFIX, dataset_log, read_table, resolve
from fmforge.data.views import DatasetVersion, DatasetWork, rule_key
from fmforge.errors import DataError
from fmforge.repository import Repository

VERDICTS = ("accept", "override")


@dataclass(frozen=True)
class Flag:
    row_id: str
    rule: dict[str, Any]
    action: str  # drop | rewrite
    new_row_id: str | None
    row: dict[str, Any]  # the row as it was before the cleaning
    verdict: str | None  # accept | override | None (not reviewed)
    reviewer: str | None


def cleaning_version(repo: Repository, target: str) -> DatasetVersion:
    """``target`` if a cleaning made it, else the newest version a cleaning made."""
    version = resolve(repo, target)
    if version.transformation.get("kind") == "clean":
        return version
    for candidate in dataset_log(repo, version.dataset):
        if candidate.transformation.get("kind") == "clean":
            return candidate
    raise DataError(
        f"{version.dataset} has no cleaned version to review (run `data clean --apply`)"
    )


@mediated("read", targets.dataset())
def flagged(repo: Repository, target: str) -> list[Flag]:
    """Every row the cleaning behind ``target`` dropped or rewrote, with its verdict."""
    version = cleaning_version(repo, target)
    changes = pq.read_table(io.BytesIO(repo.objects.get(version.transformation["changes"])))
    source = resolve(repo, f"{version.dataset}@{version.transformation['source']}")
    rows = {
        record.pop(ROW_ID): record
        for record in read_table(repo, source.ref, with_ids=True).to_pylist()
    }
    rules = version.transformation["rules"]
    verdicts = _verdicts(repo, version.dataset)
    out = []
    for change in changes.to_pylist():
        rule = rules[change["rule"]]
        verdict = verdicts.get((change["row_id"], rule_key(rule)))
        out.append(
            Flag(
                change["row_id"], rule, change["action"], change["new_row_id"],
                rows.get(change["row_id"], {}),  # a row an earlier rule rewrote: not in source
                verdict[0] if verdict else None, verdict[1] if verdict else None,
            )
        )  # fmt: skip
    return out


@mediated("clean", targets.dataset())
def review(repo: Repository, target: str, row: str, verdict: str, *, note: str = "") -> Flag:
    """Record ``verdict`` (accept or override) on the flagged row whose id starts with ``row``."""
    if verdict not in VERDICTS:
        raise DataError(f"a verdict is accept or override, not {verdict!r}")
    flags = [f for f in flagged(repo, target) if f.row_id.startswith(row)]
    if not flags:
        raise DataError(f"no flagged row with id {row!r} (see `fmforge data review {target}`)")
    if len({f.row_id for f in flags}) > 1:
        raise DataError(f"{row!r} names {len({f.row_id for f in flags})} flagged rows; give more")
    version = cleaning_version(repo, target)
    for flag in flags:  # one row may be changed by several rules: the verdict covers each
        repo.record(
            STREAM_PREFIX + version.dataset,
            CleaningReviewed(
                {"row_id": flag.row_id, "rule": flag.rule, "action": flag.action,
                 "verdict": verdict, "reviewer": repo.principal, "note": note,
                 "version": version.id},
            ),
        )  # fmt: skip
    return flagged_row(repo, target, flags[0].row_id)


def flagged_row(repo: Repository, target: str, row_id: str) -> Flag:
    return next(f for f in flagged(repo, target) if f.row_id == row_id)


def overrides(repo: Repository, dataset: str) -> set[tuple[str, str]]:
    """(row id, rule key) pairs whose standing verdict is override."""
    return {key for key, (verdict, _) in _verdicts(repo, dataset).items() if verdict == "override"}


def _verdicts(repo: Repository, dataset: str) -> dict[tuple[str, str], tuple[str, str]]:
    return repo.view(DatasetWork).cleaning_verdicts(dataset)
