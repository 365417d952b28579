"""Metric summary pyramids: min, max, last and count per block of steps, kept at flush time.

A *block* at level ``k`` holds the steps ``b * 2**k .. (b + 1) * 2**k - 1`` of one metric; its
summary is the number of values (and of finite ones), the smallest finite value and its step,
the largest and its step (ties: the smallest step), and the value at the largest step (ties:
the one logged last). Summaries of the same block merge exactly, in any number of parts, so a
chart's pixel column, which is a block at some level, is a merge of stored blocks.

**Writing** (``PyramidBuilder``, in the run's writer thread). Each metric keeps one *open*
block per level (``k0, k0 + 2, ..., 62``): the one holding its last logged step. A value
whose block differs closes the open block, which is written out as a summary; so each value
is written once per level, when its block closes, and a flush writes a few summaries per
metric, not a chart. The finest level ``k0`` fits the metric's density, decided once from its
first 64 flushes or 4,096 values (until then nothing is summarised and readers use the
chunks): blocks of at most half a flush's steps (a power of 4), so that a chart never reads
more than about ``width / 2`` chunks (one finer than the finest blocks), while the summaries
stay within a small factor of the chunks' size (0.4 at 10 steps a flush). Each flush's
summaries are one content-addressed object (``encode``), named by its ``MetricsLogged`` event.

**Indexing** (``apply_pyramid``, a ``RunsView`` handler). Summaries are merged into
``metric_blocks`` (one row per metric, level and block); ``metric_series`` keeps, per metric,
its ``k0``, its extent, the step of its last value (the *frontier*: the open blocks are the
ones holding it, so a reader rebuilds them from their closed children, and the finest from
the chunks) and how many of its chunks came without a pyramid (written before pyramids: read
from the chunks). What reads it is ``fmforge.tracking.overview``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fmforge.errors import ConfigError, CorruptObject, ObjectNotFound

if TYPE_CHECKING:
    from fmforge.objects import ObjectStore

logger = logging.getLogger(__name__)

MAX_LEVEL = 62
DECIDE_FLUSHES = 64  # the finest level is chosen after this many flushes of a metric...
DECIDE_VALUES = 4096  # ... or this many values, whichever comes first
STEPS_PER_BLOCK = 2  # a flush's steps span about this many blocks of the finest level
_MAGIC = b"fmforge-pyramid-1\n"
_BIG = np.iinfo(np.int64).max

BLOCK = np.dtype(
    [
        ("level", "<i8"), ("block", "<i8"), ("count", "<i8"), ("finite", "<i8"),
        ("min", "<f8"), ("min_step", "<i8"), ("max", "<f8"), ("max_step", "<i8"),
        ("last", "<f8"), ("last_step", "<i8"),
    ]
)  # fmt: skip
"""One block's summary; ``min``/``max`` are NaN (steps 0) when it holds no finite value."""
FIELDS: tuple[str, ...] = BLOCK.names or ()

Array = np.ndarray[Any, Any]


def levels(k0: int) -> range:
    """The stored levels of a metric whose finest level is ``k0``."""
    return range(k0, MAX_LEVEL + 1, 2)


def finest_level(steps_per_flush: float) -> int:
    """The even level whose blocks hold about ``1 / STEPS_PER_BLOCK`` of a flush's steps."""
    k = 0
    while k + 2 <= MAX_LEVEL and 2 ** (k + 2) <= steps_per_flush / STEPS_PER_BLOCK:
        k += 2
    return k


def summarize_groups(keys: Array, steps: Array, values: Array, *, ordered: bool = False) -> Array:
    """One summary per distinct key (ascending), with ``block`` set to the key. ``ordered``:
    the keys are already non-decreasing (runs of a flush)."""
    out = np.zeros(0, BLOCK)
    if keys.size == 0:
        return out
    if not ordered:
        order = np.argsort(keys, kind="stable")  # stable: logging order within a group
        keys, steps, values = keys[order], steps[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.append(starts, keys.size))
    group = np.repeat(np.arange(starts.size), counts)
    finite = np.isfinite(values)
    out = np.zeros(starts.size, BLOCK)
    out["block"] = keys[starts]
    out["count"] = counts
    out["finite"] = np.add.reduceat(finite.astype(np.int64), starts)
    low = np.where(finite, values, np.inf)
    out["min"] = np.minimum.reduceat(low, starts)
    out["min_step"] = np.minimum.reduceat(
        np.where(finite & (low == out["min"][group]), steps, _BIG), starts
    )
    high = np.where(finite, values, -np.inf)
    out["max"] = np.maximum.reduceat(high, starts)
    out["max_step"] = np.minimum.reduceat(
        np.where(finite & (high == out["max"][group]), steps, _BIG), starts
    )
    out["last_step"] = np.maximum.reduceat(steps, starts)
    at_last = np.where(steps == out["last_step"][group], np.arange(keys.size), -1)
    out["last"] = values[np.maximum.reduceat(at_last, starts)]
    none = out["finite"] == 0
    out["min"][none] = out["max"][none] = np.nan
    out["min_step"][none] = out["max_step"][none] = 0
    return out


def merge(parts: Array, keys: Array | None = None) -> Array:
    """Merge summaries with equal keys (default: their ``block``) into one each, by key. On a
    tie of ``last_step``, the later part wins (parts come in logging order)."""
    if parts.size == 0:
        return parts
    keys = parts["block"] if keys is None else keys
    if keys.size > 1 and (keys[1:] < keys[:-1]).any():
        order = np.argsort(keys, kind="stable")
        parts, keys = parts[order], keys[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    if starts.size == parts.size:
        out = parts.copy()
        out["block"] = keys
        return out
    out = np.zeros(starts.size, BLOCK)
    out["block"] = keys[starts]
    out["level"] = parts["level"][starts]
    out["count"] = np.add.reduceat(parts["count"], starts)
    out["finite"] = np.add.reduceat(parts["finite"], starts)
    group = np.repeat(np.arange(starts.size), np.diff(np.append(starts, parts.size)))
    has = parts["finite"] > 0
    # Within each group: the smallest value, then its smallest step (parts without finite
    # values never win); the largest likewise; the largest last_step, then the latest part.
    low = np.where(has, parts["min"], np.inf)
    out["min"] = np.minimum.reduceat(low, starts)
    out["min_step"] = np.minimum.reduceat(
        np.where(has & (low == out["min"][group]), parts["min_step"], _BIG), starts
    )
    high = np.where(has, parts["max"], -np.inf)
    out["max"] = np.maximum.reduceat(high, starts)
    out["max_step"] = np.minimum.reduceat(
        np.where(has & (high == out["max"][group]), parts["max_step"], _BIG), starts
    )
    out["last_step"] = np.maximum.reduceat(parts["last_step"], starts)
    latest = np.where(parts["last_step"] == out["last_step"][group], np.arange(parts.size), -1)
    out["last"] = parts["last"][np.maximum.reduceat(latest, starts)]
    none = out["finite"] == 0
    out["min"][none] = out["max"][none] = np.nan
    out["min_step"][none] = out["max_step"][none] = 0
    return out


# ---- writing ------------------------------------------------------------------------------


def combine(earlier: Array, later: Array) -> Array:
    """Element by element, the merge of two summaries of the same blocks (``later`` logged
    after ``earlier``)."""
    out = later.copy()
    out["count"] = earlier["count"] + later["count"]
    out["finite"] = earlier["finite"] + later["finite"]
    a, b = earlier["finite"] > 0, later["finite"] > 0
    keep = a & (
        ~b
        | (earlier["min"] < later["min"])
        | ((earlier["min"] == later["min"]) & (earlier["min_step"] < later["min_step"]))
    )
    out["min"] = np.where(keep, earlier["min"], later["min"])
    out["min_step"] = np.where(keep, earlier["min_step"], later["min_step"])
    keep = a & (
        ~b
        | (earlier["max"] > later["max"])
        | ((earlier["max"] == later["max"]) & (earlier["max_step"] < later["max_step"]))
    )
    out["max"] = np.where(keep, earlier["max"], later["max"])
    out["max_step"] = np.where(keep, earlier["max_step"], later["max_step"])
    keep = earlier["last_step"] > later["last_step"]
    out["last"] = np.where(keep, earlier["last"], later["last"])
    out["last_step"] = np.where(keep, earlier["last_step"], later["last_step"])
    return out  # fmt: skip


@dataclass
class _Metric:
    k0: int | None = None
    pending: list[tuple[Array, Array]] = field(default_factory=list)
    pending_values: int = 0
    open: Array = field(default_factory=lambda: np.zeros(0, BLOCK))  # one per level; count 0: none


class PyramidBuilder:
    """The summaries one run's flushes close (see the module docstring)."""

    def __init__(
        self,
        *,
        finest: int | None = None,
        decide_flushes: int = DECIDE_FLUSHES,
        decide_values: int = DECIDE_VALUES,
    ) -> None:
        """``finest``: the finest level of every metric (default: from each one's density,
        decided after ``decide_flushes`` flushes or ``decide_values`` values of it)."""
        if finest is not None and (finest % 2 or not 0 <= finest <= MAX_LEVEL):
            raise ConfigError(f"the finest level must be even, 0..{MAX_LEVEL}: {finest}")
        self._metrics: dict[str, _Metric] = {}
        self._finest = finest
        self._decide = (decide_flushes, decide_values)

    def add(self, series: Mapping[str, tuple[Array, ...]]) -> bytes:
        """Fold one flush (metric -> steps, values in logging order) in; the encoded object of
        what it closed and of the finest levels it decided."""
        out: list[tuple[str, int, Array]] = []
        for name in sorted(series):
            steps, values = series[name][:2]
            state = self._metrics.setdefault(name, _Metric())
            decided = False
            if state.k0 is None:
                state.pending.append((steps, values))
                state.pending_values += steps.size
                if len(state.pending) < self._decide[0] and state.pending_values < self._decide[1]:
                    continue
                steps = np.concatenate([p[0] for p in state.pending])
                values = np.concatenate([p[1] for p in state.pending])
                span = float(steps.max()) - float(steps.min()) + 1 if steps.size else 1.0
                state.k0 = (
                    finest_level(span / len(state.pending)) if self._finest is None
                    else self._finest
                )  # fmt: skip
                state.open = np.zeros(len(levels(state.k0)), BLOCK)
                state.open["level"] = levels(state.k0)
                state.pending, state.pending_values, decided = [], 0, True
            closed = _fold(state, steps, values)
            if decided or closed.size:
                out.append((name, state.k0, closed))
        return encode(out)


def _fold(state: _Metric, steps: Array, values: Array) -> Array:
    """Fold a flush's values of one metric into its open blocks; the blocks that closed."""
    if steps.size == 0:
        return np.zeros(0, BLOCK)
    opened, closed = state.open, []
    # Fine levels, where the flush spans several blocks: one summary per run of equal blocks.
    first_whole = len(opened)
    for i, level in enumerate(opened["level"].tolist()):
        ids = steps >> level
        if (ids == ids[0]).all():
            first_whole = i  # here and above, the flush lies in one block
            break
        run_of = np.concatenate(([0], np.cumsum(ids[1:] != ids[:-1])))
        runs = summarize_groups(run_of, steps, values, ordered=True)
        runs["block"] = ids[np.flatnonzero(np.concatenate(([True], np.diff(run_of) != 0)))]
        runs["level"] = level
        current = opened[i : i + 1]
        if current["count"][0] and current["block"][0] == runs["block"][0]:
            runs[:1] = combine(current, runs[:1])
        elif current["count"][0]:
            closed.append(current.copy())
        closed.append(runs[:-1])
        opened[i] = runs[-1]
    # Coarse levels: the flush's one summary, merged into each open block (vectorised).
    if first_whole < len(opened):
        whole = summarize_groups(np.zeros(steps.size, np.int64), steps, values, ordered=True)
        current = opened[first_whole:]
        new = np.repeat(whole, current.size)
        new["level"] = current["level"]
        new["block"] = int(steps[0]) >> current["level"]
        present = current["count"] > 0
        same = present & (current["block"] == new["block"])
        closed.append(current[present & ~same].copy())
        new[same] = combine(current[same], new[same])
        opened[first_whole:] = new
    return np.concatenate(closed) if closed else np.zeros(0, BLOCK)


def encode(entries: list[tuple[str, int, Array]]) -> bytes:
    """The object of one flush: a JSON line naming (metric, k0, number of summaries), then
    each metric's summaries field by field (little-endian arrays in ``BLOCK``'s order: steps
    and small counts side by side compress well)."""
    header = json.dumps([[name, k0, int(rows.size)] for name, k0, rows in entries])
    body = b"".join(
        np.ascontiguousarray(rows[name]).tobytes() for _, _, rows in entries for name in FIELDS
    )
    return _MAGIC + header.encode() + b"\n" + body


def decode(data: bytes) -> list[tuple[str, int, Array]]:
    if not data.startswith(_MAGIC):
        raise ValueError("not a metric pyramid")
    end = data.index(b"\n", len(_MAGIC))
    out, at = [], end + 1
    for name, k0, count in json.loads(data[len(_MAGIC) : end]):
        rows = np.zeros(int(count), BLOCK)
        for column in FIELDS:
            size = rows.size * BLOCK[column].itemsize
            if at + size > len(data):
                raise ValueError("metric pyramid: truncated")
            rows[column] = np.frombuffer(data, BLOCK[column], rows.size, at)
            at += size
        out.append((str(name), int(k0), rows))
    if at != len(data):
        raise ValueError("metric pyramid: trailing bytes")
    return out


# ---- indexing (the runs projection) -------------------------------------------------------

SCHEMA = """
CREATE TABLE metric_series (
    series INTEGER PRIMARY KEY, run_id TEXT NOT NULL, metric TEXT NOT NULL, k0 INTEGER,
    frontier INTEGER, legacy INTEGER NOT NULL, step_min INTEGER, step_max INTEGER,
    max_span INTEGER NOT NULL, UNIQUE (run_id, metric)
);
CREATE TABLE metric_blocks (
    series INTEGER NOT NULL, level INTEGER NOT NULL, block INTEGER NOT NULL,
    summary BLOB NOT NULL, PRIMARY KEY (series, level, block)
) WITHOUT ROWID;
CREATE INDEX run_chunks_by_step ON run_chunks (run_id, first_step)
"""

_SERIES_UPSERT = """
INSERT INTO metric_series (run_id, metric, k0, frontier, legacy, step_min, step_max, max_span)
VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (run_id, metric) DO UPDATE SET
    frontier = coalesce(excluded.frontier, frontier),
    legacy = legacy + excluded.legacy,
    step_min = CASE WHEN step_min IS NULL OR excluded.step_min IS NULL THEN NULL
                    ELSE min(step_min, excluded.step_min) END,
    step_max = CASE WHEN step_max IS NULL OR excluded.step_max IS NULL THEN NULL
                    ELSE max(step_max, excluded.step_max) END,
    max_span = max(max_span, excluded.max_span)
"""

# A block's summary is its ``BLOCK`` record (80 bytes: NaN and -0.0 kept as they are; a chart
# fetches ~2,000 of them as one column). Partial summaries of one block merge in Python.
_BLOCK_UPSERT = """
INSERT INTO metric_blocks VALUES (?, ?, ?, ?)
ON CONFLICT (series, level, block) DO UPDATE SET
    summary = fmforge_merge_blocks(summary, excluded.summary)
"""


def _merge_blobs(stored: bytes, new: bytes) -> bytes:
    parts = np.frombuffer(stored + new, BLOCK)
    merged = merge(parts, np.zeros(2, np.int64))
    merged["block"] = parts["block"][0]
    return bytes(merged.tobytes())


@lru_cache(maxsize=64)
def _decoded(objects: ObjectStore, digest: str) -> list[tuple[str, int, Array]]:
    return decode(objects.get(digest))  # most flushes close nothing: one shared object


SeriesKey = tuple[str, str]  # (run id, metric)
SeriesValues = tuple[Any, ...]  # (frontier, legacy, step_min, step_max, span)


def pyramid_entries(
    objects: ObjectStore | None, run_id: str, data: dict[str, Any]
) -> tuple[bool, list[tuple[str, int, Array]]]:
    """(legacy, summaries) of one ``MetricsLogged`` event: legacy when it names no readable
    pyramid object (its metrics are then read from the chunks)."""
    if "pyramid" not in data:
        return True, []
    try:
        assert objects is not None
        return False, _decoded(objects, data["pyramid"])
    except (ObjectNotFound, CorruptObject, ValueError) as exc:
        logger.warning("run %s: pyramid %s unreadable (%s); charts read its chunks",
                       run_id, data["pyramid"], exc)  # fmt: skip
        return True, []


def series_values(
    run_id: str, data: dict[str, Any], legacy: bool, span: int
) -> list[tuple[SeriesKey, SeriesValues]]:
    """What one event says of each metric's series (see ``merge_series``)."""
    return [
        ((run_id, name), (None if legacy else summary["last_step"], int(legacy),
                          summary.get("step_min"), summary.get("step_max"), span))
        for name, summary in data["metrics"].items()
        if summary["count"]
    ]  # fmt: skip


def merge_series(older: SeriesValues, newer: SeriesValues) -> SeriesValues:
    """Two events' values of one series as one: upserting the result equals upserting both in
    order (``_SERIES_UPSERT``: the newest frontier, legacy counts added, an unknown extent
    stays unknown, the widest span)."""
    frontier = newer[0] if newer[0] is not None else older[0]
    low = None if older[2] is None or newer[2] is None else min(older[2], newer[2])
    high = None if older[3] is None or newer[3] is None else max(older[3], newer[3])
    return frontier, older[1] + newer[1], low, high, max(older[4], newer[4])


def upsert_series(db: sqlite3.Connection, rows: dict[SeriesKey, SeriesValues]) -> None:
    db.executemany(_SERIES_UPSERT, [(*key, *values) for key, values in rows.items()])


def apply_blocks(
    db: sqlite3.Connection, run_id: str, entries: list[tuple[str, int, Array]]
) -> None:
    """Merge one event's block summaries into ``metric_blocks`` (its series exist)."""
    if not entries:
        return
    # Busy with a statement (OperationalError): it was registered before and is in use.
    with contextlib.suppress(sqlite3.OperationalError):
        db.create_function("fmforge_merge_blocks", 2, _merge_blobs, deterministic=True)
    for name, k0, rows in entries:
        (series,) = db.execute(
            "SELECT series FROM metric_series WHERE run_id = ? AND metric = ?", (run_id, name)
        ).fetchone()
        db.execute("UPDATE metric_series SET k0 = ? WHERE series = ?", (k0, series))
        packed, size = np.ascontiguousarray(rows, BLOCK).tobytes(), BLOCK.itemsize
        db.executemany(
            _BLOCK_UPSERT,
            [(series, level, block, packed[i * size : (i + 1) * size]) for i, (level, block)
             in enumerate(zip(rows["level"].tolist(), rows["block"].tolist(), strict=True))],
        )  # fmt: skip


def apply_pyramid(
    db: sqlite3.Connection,
    objects: ObjectStore | None,
    run_id: str,
    data: dict[str, Any],
    span: int,
) -> None:
    """Index one ``MetricsLogged`` event: its metrics' extents and frontiers, and the
    summaries of its pyramid object (without one: its metrics read from the chunks)."""
    legacy, entries = pyramid_entries(objects, run_id, data)
    upsert_series(db, dict(series_values(run_id, data, legacy, span)))
    apply_blocks(db, run_id, entries)


@dataclass(frozen=True)
class Series:
    """One metric of one run, as the pyramid index knows it."""

    id: int
    k0: int | None  # None: not summarised yet (read its chunks)
    frontier: int | None  # the step of its last value: the open blocks hold it
    legacy: int  # chunks without a pyramid (written before pyramids): read its chunks
    step_min: int | None
    step_max: int | None
    max_span: int  # the widest step range of a chunk holding it


class PyramidIndex:
    """The query side of the pyramid tables (in the runs projection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def series(self, run_id: str, metric: str) -> Series | None:
        row = self.db.execute(
            "SELECT series, k0, frontier, legacy, step_min, step_max, max_span FROM "
            "metric_series WHERE run_id = ? AND metric = ?",
            (run_id, metric),
        ).fetchone()
        return None if row is None else Series(*row)

    def blocks(self, series: int, level: int, first: int, last: int) -> Array:
        """The stored summaries of blocks ``first..last`` at ``level``, ascending."""
        if last < first:
            return np.zeros(0, BLOCK)
        rows = self.db.execute(
            "SELECT summary FROM metric_blocks WHERE series = ? AND level = ? "
            "AND block BETWEEN ? AND ? ORDER BY block",
            (series, level, _clamp(first), _clamp(last)),
        ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), BLOCK).copy()

    def chunks(self, run_id: str, metric: str, first: int, last: int, max_span: int) -> list[str]:
        """The digests of the run's chunks holding ``metric`` whose steps reach into
        ``first..last``, in logging order (an index range: chunks span at most ``max_span``)."""
        rows = self.db.execute(
            "SELECT digest, metrics FROM run_chunks WHERE run_id = ? AND first_step BETWEEN ? "
            "AND ? AND last_step >= ? ORDER BY seq",
            (run_id, _clamp(first - max_span), _clamp(last), _clamp(first)),
        )
        return [digest for digest, names in rows if metric in json.loads(names)]


def _clamp(step: int) -> int:
    return min(max(step, -(2**63)), 2**63 - 1)
