"""Summary pyramids: a chart read from them is the chart computed from every raw value.

Runs are recorded as a run's writer records them (a Parquet chunk, the flush's pyramid object,
a ``MetricsLogged`` event) into a real repository, then charted through the runs projection
and compared with ``downsample``/``reference_columns`` over the raw values read back from the
chunks: same columns, same minimum and maximum (and their steps), count, finite count and last
value, whatever the steps (out of order, repeated, far apart), values (NaN, Inf, -0.0), width
or zoom.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmforge.errors import ConfigError
from fmforge.ledger.events import new_event_id
from fmforge.repository import Repository
from fmforge.tracking.chunks import build_chunk, summarize
from fmforge.tracking.events import MetricsLogged, RunStarted
from fmforge.tracking.overview import (
    Columns,
    _chunk_series,
    downsample,
    metric_columns,
    metric_overview,
    reference_columns,
)
from fmforge.tracking.pyramid import (
    BLOCK,
    PyramidBuilder,
    decode,
    finest_level,
    merge,
    summarize_groups,
)
from fmforge.tracking.reading import read_metric

INT64 = (-(2**63), 2**63 - 1)
Flush = tuple[list[int], list[float]]


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    with Repository.init(tmp_path_factory.mktemp("pyramid")) as repo:
        yield repo


def record_run(
    repo: Repository,
    flushes: list[Flush],
    *,
    pyramid: bool = True,
    finest: int | None = None,
    decide_flushes: int = 1,
) -> str:
    """A run whose flushes logged ``flushes`` (steps, values) of metric ``m``, recorded as
    ``Run._flush`` records them; ``pyramid=False``: as fmforge did before pyramids."""
    run_id = new_event_id()
    events = [RunStarted({
        "run": run_id, "project": "p", "name": run_id, "config": {}, "config_flat": {},
        "datasets": [], "base_model": None, "seed": None, "tags": [], "started": 1.0,
    })]  # fmt: skip
    builder = PyramidBuilder(finest=finest, decide_flushes=decide_flushes)
    for steps, values in flushes:
        if not steps:
            continue
        data, series = build_chunk({"m": (steps, values, [0] * len(steps))})
        digest = repo.objects.put(data)
        payload: dict[str, Any] = {
            "chunk": digest, "bytes": len(data), "values": len(steps),
            "metrics": {n: summarize(s, v).to_json() for n, (s, v) in series.items()},
        }  # fmt: skip
        refs = [digest]
        if pyramid:
            payload["pyramid"] = repo.objects.put(builder.add(series))
            refs.append(payload["pyramid"])
        events.append(MetricsLogged(payload, refs=refs))  # type: ignore[arg-type]
    repo.record(f"run/{run_id}", events)
    return run_id


def assert_same(got: Columns, want: Columns) -> None:
    assert (got.level, got.lo, got.hi) == (want.level, want.lo, want.hi)
    assert got.rows.size == want.rows.size, (got.rows, want.rows)
    for name in BLOCK.names:
        a, b = got.rows[name], want.rows[name]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (name, got.rows, want.rows)


values_ = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, math.nan, math.inf, -math.inf]),
)


@st.composite
def flushes_(draw: st.DrawFn) -> list[Flush]:
    step = draw(st.sampled_from([0, 7, -100, 2**40, INT64[1] - 3000, INT64[0] + 3000]))
    out = []
    for _ in range(draw(st.integers(1, 10))):
        steps, values = [], []
        for _ in range(draw(st.integers(0, 25))):
            move = draw(st.sampled_from(["next", "next", "next", "next", "same", "back", "jump"]))
            if move == "next":
                step += draw(st.integers(1, 6))
            elif move == "back":
                step -= draw(st.integers(1, 60))
            elif move == "jump":
                step += draw(st.integers(-2000, 2000))
            step = min(max(step, INT64[0]), INT64[1])
            steps.append(step)
            values.append(draw(values_))
        out.append((steps, values))
    return out


@st.composite
def queries_(draw: st.DrawFn) -> list[tuple[int, float | None, float | None]]:
    out = []
    for _ in range(4):
        width = draw(st.one_of(st.integers(1, 12), st.integers(13, 400), st.just(10_000)))
        start = draw(st.one_of(st.none(), st.integers(-60, 2500), st.floats(-60, 2500)))
        length = draw(st.one_of(st.none(), st.integers(0, 3000)))
        out.append((width, start, None if length is None else (start or 0) + length))
    return out


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flushes=flushes_(),
    queries=queries_(),
    finest=st.sampled_from([None, 0, 2, 4]),
    decide=st.sampled_from([1, 2, 4]),
    pyramid=st.sampled_from([True, True, True, False]),
)
def test_charts_from_the_pyramid_are_the_charts_of_every_value(
    shared_repo: Repository,
    flushes: list[Flush],
    queries: list[tuple[int, float | None, float | None]],
    finest: int | None,
    decide: int,
    pyramid: bool,
) -> None:
    repo = shared_repo
    run_id = record_run(repo, flushes, pyramid=pyramid, finest=finest, decide_flushes=decide)
    steps, values = read_metric(repo, run_id, "m")
    base = int(steps.min()) if steps.size else 0
    for width, start, end in [(1000, None, None), *queries]:
        # zooms are drawn around the first step: the interesting part of extreme steps
        start = None if start is None else base + start
        end = None if end is None else base + end
        want = reference_columns(steps, values, width, start=start, end=end)
        assert_same(metric_columns(repo, run_id, "m", width, start=start, end=end), want)
        got_steps, got_values = metric_overview(repo, run_id, "m", width, start=start, end=end)
        want_steps, want_values = downsample(steps, values, width, start=start, end=end)
        assert got_steps.tolist() == want_steps.tolist()
        assert np.array_equal(got_values, want_values)


def test_a_long_run_is_read_from_a_bounded_number_of_blocks(tmp_path: Path) -> None:
    """A chart of a long run reads about ``width`` blocks and no chunk but the open block's;
    a zoom reads only the chunks of its range; both equal the reference."""
    rng = np.random.default_rng(7)
    flushes = []
    for flush in range(1_500):
        values = rng.normal(size=10).tolist()
        if flush == 654:
            values[3] = 1e6  # one spike, at step 6543
        flushes.append((list(range(flush * 10, flush * 10 + 10)), values))
    with Repository.init(tmp_path) as repo:
        run_id = record_run(repo, flushes, decide_flushes=64)
        steps, values = read_metric(repo, run_id, "m")
        _chunk_series.cache_clear()
        columns = metric_columns(repo, run_id, "m", 1000)
        assert_same(columns, reference_columns(steps, values, 1000))
        assert (columns.level, columns.rows.size) == (4, 938)
        assert _chunk_series.cache_info().misses <= 2  # the open block's chunks, nothing else
        xs, ys = metric_overview(repo, run_id, "m", 1000)
        assert 6543 in xs.tolist()
        assert 1e6 in ys.tolist()
        _chunk_series.cache_clear()
        zoom = metric_columns(repo, run_id, "m", 1000, start=100, end=200)
        assert_same(zoom, reference_columns(steps, values, 1000, start=100, end=200))
        assert _chunk_series.cache_info().misses == 11  # the chunks holding steps 100..200


def test_runs_written_before_pyramids_chart_from_their_chunks(repo: Repository) -> None:
    rng = np.random.default_rng(1)
    flushes: list[Flush] = [
        (list(range(i * 50, i * 50 + 50)), rng.normal(size=50).tolist()) for i in range(40)
    ]
    flushes[7][1][3] = math.nan
    old = record_run(repo, flushes, pyramid=False)
    new = record_run(repo, flushes)
    steps, values = read_metric(repo, old, "m")
    for width, start, end in [(1000, None, None), (30, None, None), (100, 333, 1500)]:
        want = reference_columns(steps, values, width, start=start, end=end)
        assert_same(metric_columns(repo, old, "m", width, start=start, end=end), want)
        assert_same(metric_columns(repo, new, "m", width, start=start, end=end), want)
    assert metric_columns(repo, old, "absent", 100).empty


def test_the_builder_closes_each_block_once_and_keeps_the_open_ones() -> None:
    builder = PyramidBuilder(finest=2, decide_flushes=1)
    steps = np.arange(0, 10, dtype=np.int64)
    [(name, k0, closed)] = decode(builder.add({"m": (steps, steps * 1.0)}))
    assert (name, k0) == ("m", 2)
    # level 2: blocks 0..3 and 4..7 closed, 8..9 open; coarser levels all open
    assert [(r["level"], r["block"], r["count"]) for r in closed] == [(2, 0, 4), (2, 1, 4)]
    assert closed["last"].tolist() == [3.0, 7.0]
    assert decode(builder.add({"m": (np.array([11]), np.array([math.nan]))})) == []
    [(_, _, closed)] = decode(builder.add({"m": (np.array([12]), np.array([1.0]))}))
    (block,) = closed  # 8..11 closed: two values and a NaN
    assert (block["block"], block["count"], block["finite"]) == (2, 3, 2)
    assert math.isnan(block["last"])
    assert block["last_step"] == 11
    assert (block["min"], block["max"]) == (8.0, 9.0)
    with pytest.raises(ConfigError, match="even"):
        PyramidBuilder(finest=3)


def test_finest_level_follows_the_steps_per_flush() -> None:
    assert [finest_level(s) for s in (0.5, 1, 7, 8, 100, 1000, 1e9)] == [0, 0, 0, 2, 4, 8, 28]


def test_merge_is_exact_whatever_the_split() -> None:
    rng = np.random.default_rng(0)
    steps = rng.integers(0, 40, 500)
    values = rng.normal(size=500)
    values[rng.integers(0, 500, 40)] = np.nan
    values[rng.integers(0, 500, 5)] = 0.0
    keys = steps >> 3
    whole = summarize_groups(keys, steps, values)
    cuts = np.sort(rng.integers(0, 500, 30))
    parts = np.concatenate([
        summarize_groups(keys[a:b], steps[a:b], values[a:b]) for a, b in zip(
            np.r_[0, cuts], np.r_[cuts, 500], strict=True)
    ])  # fmt: skip
    merged = merge(parts)
    for name in BLOCK.names:
        assert np.array_equal(merged[name], whole[name], equal_nan=merged[name].dtype.kind == "f")
