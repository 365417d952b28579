"""Record-level lineage and forgetting.

``trace`` follows one record through every dataset version that holds it, under each id it
had (a cleaning that rewrites a row gives it a new id; its changes object links the two), then
to every training run given such a version and every model commit those runs checkpointed.

``forget`` commits a version without the matching rows, records why (``RowsForgotten``, with
the runs and model commits trained on them), and erases from the object store every row chunk
that holds them, unless the newest version of some dataset still holds that record: older
versions that held them then say so when read, instead of giving the rows back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import RowsForgotten
from fmforge.data.storage import ROW_ID, RowLocator, load_manifest, manifest_ids
from fmforge.data.versions import (
    STREAM_PREFIX,
    AddResult,
    commit_table,
    dataset_log,
    list_datasets,
    read_table,
    resolve,
)
from fmforge.data.views import DatasetVersion, DatasetWork
from fmforge.errors import DataError, DatasetNotFound, InvalidName, ObjectNotFound
from fmforge.repository import Repository


@dataclass
class Trace:
    row_ids: list[str]  # the record's ids, first the one asked about
    versions: list[dict[str, Any]] = field(default_factory=list)  # ref, id, row_id, kind
    runs: list[dict[str, Any]] = field(default_factory=list)  # id, name, dataset
    models: list[dict[str, Any]] = field(default_factory=list)  # model, commit, run


def _versions_in_order(repo: Repository) -> list[DatasetVersion]:
    out: list[DatasetVersion] = []
    for latest in list_datasets(repo):
        out.extend(reversed(dataset_log(repo, latest.dataset)))
    return out


def holds(repo: Repository, version: DatasetVersion, row_id: str) -> bool:
    """Whether ``version`` holds the row ``row_id`` (its chunk not erased)."""
    locator = RowLocator(repo.objects, [row_id])
    return row_id in locator.held(load_manifest(repo.objects, version.manifest))


@mediated("read_meta", targets.fixed("dataset"))
def trace(repo: Repository, row_id: str) -> Trace:
    """Every version, run and model commit that holds or used the record ``row_id`` (a full
    id, or a prefix of 8 or more characters found in some version)."""
    versions = _versions_in_order(repo)
    if len(row_id) < 32:
        row_id = _complete(repo, versions, row_id)
    result = Trace([row_id])
    aliases = {row_id}
    locator = RowLocator(repo.objects, aliases)
    used: dict[str, str] = {}  # version id -> ref
    for version in versions:
        kind = version.transformation.get("kind", "")
        changes = version.transformation.get("changes")
        if changes and repo.objects.has(changes):
            table = pq.read_table(io.BytesIO(repo.objects.get(changes))).to_pylist()
            for change in table:
                if change["row_id"] in aliases and change["new_row_id"]:
                    aliases.add(change["new_row_id"])
                    result.row_ids.append(change["new_row_id"])
        if set(locator.ids) != aliases:
            locator = RowLocator(repo.objects, aliases)
        held = locator.held(load_manifest(repo.objects, version.manifest))
        for alias in sorted(aliases):
            if alias in held:
                result.versions.append(
                    {"ref": version.ref, "id": version.id, "row_id": alias, "made_by": kind}
                )
                used[version.id] = version.ref
                break
    _downstream(repo, used, result)
    return result


def _complete(repo: Repository, versions: list[DatasetVersion], prefix: str) -> str:
    if len(prefix) < 8:
        raise DataError(f"give at least 8 characters of the row id, not {prefix!r}")
    for version in reversed(versions):
        try:
            ids = manifest_ids(repo.objects, load_manifest(repo.objects, version.manifest))
        except ObjectNotFound:  # chunks erased when rows were forgotten
            continue
        hits = {i for i in ids if i.startswith(prefix)}
        if len(hits) == 1:
            return str(hits.pop())
        if len(hits) > 1:
            raise DataError(f"{prefix!r} names {len(hits)} rows; give more of the id")
    raise DataError(f"no row with id {prefix!r} in any dataset version")


def _downstream(repo: Repository, used: dict[str, str], result: Trace) -> None:
    """Runs given one of ``used`` (NAME@REF resolved to version ids) and their checkpoints."""
    if not used:
        return
    from fmforge.tracking import dataset_usage

    for run in dataset_usage(repo):
        hit = False
        for dataset in run["datasets"]:
            try:
                version = resolve(repo, dataset)
            except (DatasetNotFound, InvalidName):
                continue
            if version.id in used:
                result.runs.append({"id": run["id"], "name": run["name"], "dataset": dataset})
                hit = True
        if hit:
            result.models.extend(
                {"model": c["model"], "commit": c["commit"], "run": run["id"]}
                for c in run["checkpoints"]
            )


@dataclass
class Forgotten:
    result: AddResult
    rows: int
    erased: list[str]  # chunk objects deleted
    kept_live: int  # records still held by the newest version of another dataset
    runs: list[dict[str, Any]]
    models: list[dict[str, Any]]


@mediated("forget", targets.dataset_name())
def forget(
    repo: Repository, name: str, condition: str, *, reason: str, source: str = "--where"
) -> Forgotten:
    """Commit ``name`` without the rows where the filter ``condition`` holds (one expression
    over its columns: :mod:`fmforge.data.filters`), and erase them."""
    from fmforge.data.tables import where

    if not reason.strip():
        raise DataError("say why the rows are forgotten (--reason): it goes on the record")
    latest = resolve(repo, name)
    doomed = where(repo, latest.ref, condition, source=source)
    forgotten = set(doomed.column(ROW_ID).to_pylist())
    if not forgotten:
        raise DataError(f"no row of {latest.ref} matches {condition!r}: nothing forgotten")
    # The same records under their earlier ids (before a cleaning rewrote them) go too.
    earlier = _earlier_ids(repo, forgotten)
    table = read_table(repo, latest.ref, with_ids=True)
    keep = [i not in forgotten for i in table.column(ROW_ID).to_pylist()]
    kept = table.filter(keep)
    result = commit_table(
        repo, latest.dataset, kept.drop_columns([ROW_ID]), kept.column(ROW_ID).to_pylist(),
        transformation={"kind": "forget", "source": latest.id, "rows": len(forgotten),
                        "reason": reason},
        message=f"forget {len(forgotten)} rows: {reason}", parents=(latest.id,),
        avoid=forgotten | earlier,
    )  # fmt: skip
    removed = len(forgotten)
    forgotten |= earlier
    # Every stored chunk holding one of the rows goes, unless a live version (the newest of
    # some dataset) uses that chunk: then the rows in it stay, and are counted as still live.
    live = {v.id for v in list_datasets(repo)}
    locator = RowLocator(repo.objects, forgotten)
    tainted: dict[str, set[str]] = {}
    needed: set[str] = set()
    still_live: set[str] = set()
    used: dict[str, str] = {}
    for version in _versions_in_order(repo):
        manifest = load_manifest(repo.objects, version.manifest)
        tainted.update(locator.chunks(manifest))
        held = locator.held(manifest)
        if held:
            used[version.id] = version.ref
        if version.id in live:
            needed.update(c["digest"] for c in manifest["chunks"])
            still_live.update(held)
    for digest in needed.intersection(tainted):
        still_live.update(tainted[digest])
    trace_result = Trace(sorted(forgotten))
    _downstream(repo, used, trace_result)
    erased = repo.erase(set(tainted) - needed, f"forgotten rows of {latest.dataset}: {reason}")
    repo.record(
        STREAM_PREFIX + latest.dataset,
        RowsForgotten(
            {"dataset": latest.dataset, "version": result.version.id, "rows": removed,
             "earlier_forms": len(forgotten) - removed,
             "reason": reason, "erased_chunks": len(erased), "still_live": len(still_live),
             "runs": trace_result.runs, "models": trace_result.models},
        ),
    )  # fmt: skip
    return Forgotten(
        result, removed, erased, len(still_live), trace_result.runs, trace_result.models
    )


def _earlier_ids(repo: Repository, ids: set[str]) -> set[str]:
    """Ids the records had before cleanings rewrote them into ``ids``."""
    earlier: set[str] = set()
    for version in reversed(_versions_in_order(repo)):
        changes = version.transformation.get("changes")
        if not changes or not repo.objects.has(changes):
            continue
        for change in pq.read_table(io.BytesIO(repo.objects.get(changes))).to_pylist():
            if change["new_row_id"] in ids or change["new_row_id"] in earlier:
                earlier.add(change["row_id"])
    return earlier - ids


def forgotten_in(repo: Repository) -> list[dict[str, Any]]:
    """Every ``RowsForgotten`` record: what downstream runs and models were trained on."""
    return repo.view(DatasetWork).rows_forgotten()
