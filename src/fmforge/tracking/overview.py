"""A metric at chart resolution: per pixel column, its smallest and largest value.

What a chart of ``width`` columns over the steps ``lo..hi`` shows (``downsample`` computes it
from raw values, the reference): the steps are cut into columns of ``2**j`` steps aligned on
multiples of ``2**j``, ``j`` the smallest giving at most ``width`` columns; each column gives
its smallest and its largest finite value at their steps (ties: the smallest step), in step
order, one point when they coincide. So spikes never vanish, and zoomed in to one step per
column every value comes back exactly (a step logged several times: its smallest and largest).

``metric_columns`` gives the same from a run's summary pyramid (``fmforge.tracking.pyramid``)
at a bounded cost whatever the run's length: a column at level ``j`` is one or two stored
blocks; a column cut by the zoom's edge, or holding the metric's open blocks, is rebuilt from
finer blocks, and below the finest level from the chunks of those few steps. A chart finer
than the finest level reads the chunks of its range (about ``width / 2`` at most: the finest
level follows the run's steps per flush). Metrics of runs written before pyramids, and metrics not
summarised yet (their first 64 flushes), are read from their chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fmforge.errors import RunNotFound
from fmforge.repository import Repository
from fmforge.tracking.chunks import read_series
from fmforge.tracking.pyramid import (
    BLOCK,
    MAX_LEVEL,
    Array,
    PyramidIndex,
    Series,
    levels,
    merge,
    summarize_groups,
)
from fmforge.tracking.views import RunsIndex, RunsView

_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Columns:
    """A chart's columns: ``rows`` (``BLOCK`` records, ``block`` = column ``step >> level``)
    of the columns holding values, ascending, over the steps ``lo..hi``."""

    level: int
    lo: int
    hi: int
    rows: Array

    @property
    def empty(self) -> bool:
        return self.rows.size == 0


def column_level(lo: int, hi: int, width: int) -> int:
    """The smallest ``j`` cutting ``lo..hi`` into at most ``width`` columns of ``2**j`` steps
    (63 at most: then at most two)."""
    for j in range(64):
        if (hi >> j) - (lo >> j) + 1 <= width:
            return j
    return 63


def _bounds(start: float | None, end: float | None, lo: int, hi: int) -> tuple[int, int]:
    if start is not None:
        lo = math.ceil(start)
    if end is not None:
        hi = math.floor(end)
    return max(lo, _INT64[0]), min(hi, _INT64[1])


def _empty(lo: int = 0, hi: int = -1) -> Columns:
    return Columns(0, lo, hi, np.zeros(0, BLOCK))


def reference_columns(
    steps: Array, values: Array, width: int, *, start: float | None = None, end: float | None = None
) -> Columns:
    """The columns of ``steps``/``values`` (logging order) computed from every value."""
    if steps.size == 0 and (start is None or end is None):
        return _empty()
    lo, hi = _bounds(
        start, end, int(steps.min()) if steps.size else 0, int(steps.max()) if steps.size else 0
    )
    if lo > hi:
        return _empty(lo, hi)
    inside = (steps >= lo) & (steps <= hi)
    steps, values = steps[inside], values[inside]
    level = column_level(lo, hi, max(1, width))
    rows = summarize_groups(steps >> level, steps, values)
    rows["level"] = level
    return Columns(level, lo, hi, rows)


def points(columns: Columns) -> tuple[Array, Array]:
    """(steps, values) to draw: each column's minimum and maximum, in step order."""
    rows = columns.rows[columns.rows["finite"] > 0]
    low_s, low_v, high_s, high_v = rows["min_step"], rows["min"], rows["max_step"], rows["max"]
    low_first = low_s <= high_s
    first_s, second_s = np.where(low_first, low_s, high_s), np.where(low_first, high_s, low_s)
    first_v, second_v = np.where(low_first, low_v, high_v), np.where(low_first, high_v, low_v)
    keep = np.stack([np.ones(rows.size, bool), (low_s != high_s) | (low_v != high_v)], 1).ravel()
    steps = np.stack([first_s, second_s], 1).ravel()[keep]
    values = np.stack([first_v, second_v], 1).ravel()[keep]
    return steps.astype(np.int64), values.astype(np.float64)


def downsample(
    steps: Array, values: Array, width: int, *, start: float | None = None, end: float | None = None
) -> tuple[Array, Array]:
    """At most ``2 * width`` points: each column's minimum and maximum (see the module
    docstring), from every value."""
    return points(reference_columns(steps, values, width, start=start, end=end))


@lru_cache(maxsize=1024)
def _chunk_series(objects: Any, digest: str, name: str) -> tuple[Array, ...]:
    # Chunks never change (content addressed): a decoded series can be kept as long as wanted.
    return read_series([objects.get(digest)], name)


def _concat(parts: list[tuple[Array, ...]]) -> tuple[Array, Array]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _Reader:
    """One metric of one run: raw values from its chunks, summaries from its pyramid."""

    def __init__(
        self, repo: Repository, index: RunsIndex, run_id: str, name: str, series: Series
    ) -> None:
        self.objects = repo.objects
        self.index = PyramidIndex(index.db)
        self.runs = index
        self.run_id, self.name, self.series = run_id, name, series
        # Summarised: its finest level and the step its open blocks hold (else unused).
        self.k0 = series.k0 if series.k0 is not None else 0
        self.frontier = series.frontier if series.frontier is not None else 0

    def raw(self, first: int | None = None, last: int | None = None) -> tuple[Array, Array]:
        """Every value at steps ``first..last`` (default: all), in logging order."""
        series = self.series
        if first is None or last is None or series.legacy or series.step_min is None:
            digests = [c.digest for c in self.runs.chunks(self.run_id, metric=self.name,
                                                          start=first, end=last)]  # fmt: skip
        else:
            digests = self.index.chunks(self.run_id, self.name, first, last, series.max_span)
        steps, values = _concat([_chunk_series(self.objects, d, self.name) for d in digests])
        if first is not None and last is not None:
            inside = (steps >= first) & (steps <= last)
            steps, values = steps[inside], values[inside]
        return steps, values

    def _raw_summary(self, first: int, last: int) -> Array:
        steps, values = self.raw(first, last)
        return summarize_groups(np.zeros(steps.size, np.int64), steps, values, ordered=True)

    def block(self, level: int, block: int) -> Array:
        """The exact summary of one block (0 or 1 records): stored, or, for an open block,
        rebuilt from its children (the finest from the chunks)."""
        series = self.series.id
        if self.frontier >> level != block:
            return self.index.blocks(series, level, block, block)
        if level == self.k0:
            out = self._raw_summary(block << level, ((block + 1) << level) - 1)
        else:
            child = self.frontier >> (level - 2)
            parts = [
                self.index.blocks(series, level - 2, block << 2, child - 1),
                self.block(level - 2, child),
                self.index.blocks(series, level - 2, child + 1, (block << 2) + 3),
            ]
            out = _one(np.concatenate(parts))
        out["level"], out["block"] = level, block
        return out

    def range_summary(self, first: int, last: int) -> Array:
        """The exact summary of steps ``first..last`` (0 or 1 records): the stored blocks
        inside it, the rest from the chunks."""
        stored = list(reversed(levels(self.k0)))
        parts: list[Array] = []
        at = first
        while at <= last:
            for level in stored:
                size = 1 << level
                if at % size == 0 and at + size - 1 <= last:
                    parts.append(self.block(level, at >> level))
                    at += size
                    break
            else:
                upto = min(last, (((at >> self.k0) + 1) << self.k0) - 1)
                parts.append(self._raw_summary(at, upto))
                at = upto + 1
        return _one(np.concatenate(parts)) if parts else np.zeros(0, BLOCK)

    def columns(self, lo: int, hi: int, width: int) -> Columns:
        j = column_level(lo, hi, width)
        if j < self.k0:  # finer than the finest blocks: the chunks of the range
            steps, values = self.raw(lo, hi)
            return reference_columns(steps, values, width, start=lo, end=hi)
        k = self.k0 + (min(j, MAX_LEVEL) - self.k0) // 2 * 2  # the stored level to read
        shift = j - k
        first, last = lo >> j, hi >> j
        inner_first = first if first << j >= lo else first + 1
        inner_last = last if ((last + 1) << j) - 1 <= hi else last - 1
        parts: list[Array] = []
        keys: list[Array] = []
        edges = [c for c in sorted({first, last}) if not inner_first <= c <= inner_last]
        for column in edges:  # cut by the range's ends: rebuilt from what lies inside
            part = self.range_summary(max(lo, column << j), min(hi, ((column + 1) << j) - 1))
            parts.append(part)
            keys.append(np.full(part.size, column, np.int64))
        if inner_first <= inner_last:
            begin, end = inner_first << shift, ((inner_last + 1) << shift) - 1
            rows = self.index.blocks(self.series.id, k, begin, end)
            opened = self.frontier >> k
            if begin <= opened <= end:
                rows = np.concatenate((rows[rows["block"] != opened], self.block(k, opened)))
            parts.append(rows)
            keys.append(rows["block"] >> shift)
        rows = np.concatenate(parts)
        keep = rows["count"] > 0
        rows = merge(rows[keep], np.concatenate(keys)[keep])
        rows["level"] = j
        return Columns(j, lo, hi, rows)


def _one(parts: Array) -> Array:
    parts = parts[parts["count"] > 0]
    return merge(parts, np.zeros(parts.size, np.int64)) if parts.size else parts


def metric_columns(
    repo: Repository,
    run_id: str,
    name: str,
    width: int = 1000,
    *,
    start: float | None = None,
    end: float | None = None,
) -> Columns:
    """The columns of a chart of metric ``name`` of run ``run_id`` over the steps
    ``start..end`` (default: all of them), ``width`` columns at most."""
    index = repo.view(RunsView)
    series = PyramidIndex(index.db).series(run_id, name)
    if series is None:  # never logged: no values, wherever one looks
        index.run(run_id)  # RunNotFound for an unknown run
        nothing = np.zeros(0, np.int64)
        return reference_columns(nothing, nothing.astype(float), width, start=start, end=end)
    reader = _Reader(repo, index, run_id, name, series)
    width = max(1, width)
    if series.legacy or series.k0 is None or series.frontier is None or series.step_min is None:
        if start is None or end is None:
            steps, values = reader.raw()
        else:
            steps, values = reader.raw(*_bounds(start, end, 0, 0))
        return reference_columns(steps, values, width, start=start, end=end)
    assert series.step_max is not None
    lo, hi = _bounds(start, end, series.step_min, series.step_max)
    if lo > hi:
        return _empty(lo, hi)
    return reader.columns(lo, hi, width)


def metric_overview(
    repo: Repository,
    run_id: str,
    name: str,
    width: int = 1000,
    *,
    start: float | None = None,
    end: float | None = None,
) -> tuple[Array, Array]:
    """A metric over steps ``start..end`` (default: all) as at most ``2 * width`` points,
    each column's minimum and maximum (what a chart of that width can show; spikes never
    vanish): ``downsample`` of every value, read from the run's summaries."""
    return points(metric_columns(repo, run_id, name, width, start=start, end=end))


__all__ = [
    "Columns",
    "RunNotFound",
    "column_level",
    "downsample",
    "metric_columns",
    "metric_overview",
    "points",
    "reference_columns",
]
