"""Metric chunks and chart reduction: values come back exactly; spikes survive reduction."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmforge.tracking.chunks import build_chunk, read_series
from fmforge.tracking.overview import column_level
from fmforge.tracking.reading import downsample


def _columns() -> dict[str, tuple[list[int], list[float], list[int]]]:
    rng = np.random.default_rng(3)
    loss = rng.normal(size=500).tolist()
    loss[17], loss[18] = math.nan, math.inf
    return {
        "loss": (list(range(500)), loss, list(range(10_000, 10_500))),
        "lr": ([0, 100], [-0.0, 5e-324], [1, 2]),
        "empty_name_ok": ([7], [1.5], [3]),
    }


def test_chunks_give_back_every_value_bit_for_bit() -> None:
    columns = _columns()
    data, _ = build_chunk(columns)
    for name, (steps, values, times) in columns.items():
        got_steps, got_values, got_times = read_series([data, data], name, with_times=True)
        assert got_steps.tolist() == steps * 2
        assert got_times.tolist() == times * 2
        expected = np.asarray(values * 2, dtype=np.float64)
        assert got_values.tobytes() == expected.tobytes()  # NaN, Inf, -0.0, subnormal
    absent = read_series([data], "not_logged")
    assert absent[0].size == 0
    assert absent[1].dtype == np.float64


def test_chunks_in_the_first_layout_stay_readable() -> None:
    """Chunks written before the one-row-group-per-metric layout: one long table."""
    names = ["acc", "loss"]
    metric = pa.DictionaryArray.from_arrays(pa.array(np.array([1, 0, 1], np.int32)), names)
    table = pa.table(
        {"metric": metric, "step": [0, 0, 1], "time_us": [5, 5, 6], "value": [2.0, 0.5, 1.0]}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    steps, values = read_series([sink.getvalue()], "loss")
    assert steps.tolist() == [0, 1]
    assert values.tolist() == [2.0, 1.0]


@pytest.mark.parametrize("size", [10, 2_000, 10_007, 99_999])
def test_downsampling_keeps_every_column_extreme_in_step_order(size: int) -> None:
    rng = np.random.default_rng(size)
    steps = np.arange(size, dtype=np.int64) * 3
    values = rng.normal(size=size)
    values[size // 3] = 50.0  # a one-step spike
    values[size // 2] = -50.0
    values[size // 5] = math.nan  # not drawable: anomalies mark it
    width = 100
    xs, ys = downsample(steps, values, width)
    assert xs.size <= 2 * width + 2
    assert np.all(np.diff(xs) > 0)
    assert 50.0 in ys
    assert -50.0 in ys
    finite = np.isfinite(values)
    assert ys.max() == values[finite].max()
    assert ys.min() == values[finite].min()
    lookup = dict(zip(steps.tolist(), values.tolist(), strict=True))
    assert all(lookup[s] == v for s, v in zip(xs.tolist(), ys.tolist(), strict=True))
    # Every column (2**j steps, aligned; at most `width` of them) gives its extremes.
    level = column_level(int(steps.min()), int(steps.max()), width)
    assert (int(steps.max()) >> level) - (int(steps.min()) >> level) < width
    assert (
        level == 0 or (int(steps.max()) >> (level - 1)) - (int(steps.min()) >> (level - 1)) >= width
    )
    columns = steps >> level
    for column in np.unique(columns):
        part = values[(columns == column) & finite]
        if part.size:
            assert part.max() in ys
            assert part.min() in ys
