"""Diffs between dataset versions, reading only the rows that differ.

Two versions that share chunks share rows: a row both take from the same offset of the same
chunk is the same row, unchanged, and nothing of it is read. The rest is settled by row id,
reading only the id column of the chunks holding it, or not even that when one version was
written against the other (its manifest's ``bases`` is the other's alone): its rows outside
the shared places are then new, except those in chunks marked ``copied``, which are the base's
rows written again. Full rows are read only for the examples, and with ``key`` for the rows
added and removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fmforge.access import targets
from fmforge.access.cells import present
from fmforge.access.mediation import mediated
from fmforge.data.rowids import DigestIndex, id_digests
from fmforge.data.storage import ROW_ID, Layout, layout, manifest_schema, read_rows
from fmforge.data.storage_v1 import compress_runs
from fmforge.data.versions import open_version, reading, resolve
from fmforge.errors import DataError
from fmforge.objects import ObjectStore
from fmforge.repository import Repository


@dataclass
class DatasetDiff:
    old: str  # NAME@vN
    new: str
    added: int
    removed: int
    unchanged: int
    changed: int = 0  # with a key: rows whose key is in both with other values
    key: str | None = None
    changed_by_column: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Side:
    """One version's rows as places: (chunk, offset), coded by chunk digest."""

    def __init__(
        self, objects: ObjectStore, digest: str, manifest: dict[str, Any], codes: dict[str, int]
    ) -> None:
        self.objects, self.digest, self.manifest = objects, digest, manifest
        self.shape: Layout = layout(objects, manifest)
        self.chunk, self.offset = self.shape.positions()
        code = np.array(
            [codes.setdefault(c["digest"], len(codes)) for c in self.shape.chunks], np.int64
        )
        copied = np.array([bool(c.get("copied")) for c in self.shape.chunks], bool)
        self.places = (code[self.chunk] << 32) | self.offset if len(self.chunk) else self.chunk
        self.copied = copied[self.chunk] if len(self.chunk) else np.zeros(0, bool)
        self.columns = manifest_schema(manifest).names
        runs = self.shape.runs
        starts = (code[runs[:, 0]] << 32) | runs[:, 1] if len(runs) else runs[:, 0]
        order = np.argsort(starts, kind="stable")
        self.run_starts, self.run_ends = starts[order], (starts + runs[:, 2])[order]

    def holds(self, places: np.ndarray) -> np.ndarray:
        """Per place, whether this version takes a row from it (its runs, binary-searched)."""
        if len(self.run_starts) == 0:
            return np.zeros(len(places), bool)
        at = np.searchsorted(self.run_starts, places, "right") - 1
        inside: np.ndarray = (at >= 0) & (places < self.run_ends[np.maximum(at, 0)])
        return inside

    def rows(self, positions: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """The rows at ``positions`` (ascending), in order."""
        runs = compress_runs(self.chunk[positions], self.offset[positions])
        return read_rows(self.objects, self.manifest, self.shape, runs, columns=columns)

    def ids(self, positions: np.ndarray) -> np.ndarray:
        return id_digests(self.rows(positions, [ROW_ID]).column(ROW_ID))

    def written_against(self, other: _Side) -> bool:
        return self.shape.bases == (other.digest,)


def _among(digests: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per digest, whether it is one of ``others``."""
    return DigestIndex(others).lookup(digests) >= 0


def _diff_needs(repo: Repository, args: Any) -> list[tuple[str, str]]:
    old, new = args["old"], args["new"]
    if "@" not in new:
        new = f"{old.partition('@')[0]}@{new}"
    return [("read", targets.dataset_resource(repo, old)),
            ("read", targets.dataset_resource(repo, new))]  # fmt: skip


@mediated("read", _diff_needs)
def diff_datasets(
    repo: Repository, old: str, new: str, *, key: str | None = None, examples: int = 3
) -> DatasetDiff:
    """Rows added, removed and unchanged between two versions (by row id). With ``key`` (a
    column identifying a record), a removed and an added row with the same key count as one
    changed row, and the columns whose values changed are counted."""
    a_version = resolve(repo, old)
    b_version = resolve(repo, new if "@" in new else f"{a_version.dataset}@{new}")
    a_version, a_manifest = open_version(repo, a_version.ref)
    b_version, b_manifest = open_version(repo, b_version.ref)
    with reading(repo, a_version, a_manifest), reading(repo, b_version, b_manifest):
        codes: dict[str, int] = {}
        a = _Side(repo.objects, a_version.manifest, a_manifest, codes)
        b = _Side(repo.objects, b_version.manifest, b_manifest, codes)
        a_rest = np.flatnonzero(~b.holds(a.places))
        b_rest = np.flatnonzero(~a.holds(b.places))
        removed, added = _settle(a, b, a_rest, b_rest)
        report = DatasetDiff(
            a_version.ref, b_version.ref, len(added), len(removed),
            len(a.places) - len(removed), key=key,
            columns_added=[c for c in b.columns if c not in a.columns],
            columns_removed=[c for c in a.columns if c not in b.columns],
        )  # fmt: skip
        if key is None:
            removed, added = removed[:examples], added[:examples]
        old_rows = present(repo, a_version.dataset, a.rows(removed))
        new_rows = present(repo, b_version.dataset, b.rows(added))
        old_rows = old_rows.drop_columns([ROW_ID]).to_pylist()
        new_rows = new_rows.drop_columns([ROW_ID]).to_pylist()
    if key is not None:
        for side, name in ((a, a_version.ref), (b, b_version.ref)):
            if key not in side.columns:
                raise DataError(f"{name} has no column {key!r} to use as the diff key")
        before = {row[key]: row for row in old_rows}
        changed = []
        for row in new_rows:
            previous = before.pop(row[key], None)
            if previous is not None:
                columns = [c for c in b.columns if c in previous and previous[c] != row[c]]
                for column in columns:
                    report.changed_by_column[column] = report.changed_by_column.get(column, 0) + 1
                changed.append({key: row[key], **{c: [previous[c], row[c]] for c in columns}})
        changed_keys = {c[key] for c in changed}
        new_rows = [r for r in new_rows if r[key] not in changed_keys]
        old_rows = list(before.values())
        report.changed = len(changed)
        report.added, report.removed = len(new_rows), len(old_rows)
        report.examples["changed"] = changed[:examples]
    report.examples["added"] = new_rows[:examples]
    report.examples["removed"] = old_rows[:examples]
    return report


def _settle(
    a: _Side, b: _Side, a_rest: np.ndarray, b_rest: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the rows removed from ``a`` and added in ``b``, among those not in
    shared places."""
    if b.written_against(a) or a.written_against(b):
        forward = b.written_against(a)
        child, parent = (b, a) if forward else (a, b)
        child_rest, parent_rest = (b_rest, a_rest) if forward else (a_rest, b_rest)
        copies = child_rest[child.copied[child_rest]]
        new = child_rest[~child.copied[child_rest]]
        gone = parent_rest
        if len(copies):
            gone = parent_rest[~_among(parent.ids(parent_rest), child.ids(copies))]
        return (gone, new) if forward else (new, gone)
    a_ids, b_ids = a.ids(a_rest), b.ids(b_rest)
    return a_rest[~_among(a_ids, b_ids)], b_rest[~_among(b_ids, a_ids)]
