"""Metric chunks: the values a run logged during one flush interval, as one Parquet object.

A chunk holds one row group per metric (their names, in order, in the file's metadata), each
with ``step`` and ``time_us`` (int64, delta-encoded: consecutive steps cost about a byte) and
``value`` (float64, exactly as logged, NaN and Inf included); reading one metric reads only its
row group. The ``MetricsLogged`` event that records a
chunk carries its object digest and a summary per metric, so listing and filtering runs never
opens a chunk.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_INDEX_KEY = "fmforge.metrics"  # the metric of each row group, in order

Columns = Mapping[str, tuple[Any, Any, Any]]  # metric -> steps, values, µs (lists or arrays)


@dataclass(frozen=True)
class MetricSummary:
    count: int
    last: float | None
    min: float | None
    max: float | None
    non_finite: int
    last_step: int
    step_min: int
    step_max: int

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count, "last": self.last, "min": self.min, "max": self.max,
            "non_finite": self.non_finite, "last_step": self.last_step,
            "step_min": self.step_min, "step_max": self.step_max,
        }  # fmt: skip


def summarize(steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> MetricSummary:
    finite = values[np.isfinite(values)]
    last = float(values[-1]) if values.size else math.nan
    return MetricSummary(
        int(values.size),
        last if math.isfinite(last) else None,
        float(finite.min()) if finite.size else None,
        float(finite.max()) if finite.size else None,
        int(values.size - finite.size),
        int(steps[-1]) if steps.size else -1,
        int(steps.min()) if steps.size else -1,
        int(steps.max()) if steps.size else -1,
    )


def build_chunk(columns: Columns) -> tuple[bytes, dict[str, tuple[np.ndarray[Any, Any], ...]]]:
    """(Parquet bytes, metric -> (steps, values)) of what was logged."""
    names = sorted(columns)
    series = {
        n: (
            np.asarray(columns[n][0], dtype=np.int64),
            np.asarray(columns[n][1], dtype=np.float64),
            np.asarray(columns[n][2], dtype=np.int64),
        )
        for n in names
    }
    schema = pa.schema(
        [("step", pa.int64()), ("time_us", pa.int64()), ("value", pa.float64())],
        metadata={_INDEX_KEY: json.dumps(names)},
    )
    sink = io.BytesIO()
    with pq.ParquetWriter(
        sink, schema, compression="zstd", use_dictionary=False, write_statistics=False,
        column_encoding={"step": "DELTA_BINARY_PACKED", "time_us": "DELTA_BINARY_PACKED"},
    ) as writer:  # fmt: skip
        for n in names:  # one row group per metric: a chart reads only its metric's rows
            steps, values, times = series[n]
            arrays = [_column(steps, pa.int64()), _column(times, pa.int64()),
                      _column(values, pa.float64())]  # fmt: skip
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    return sink.getvalue(), {n: series[n][:2] for n in names}


def _column(values: np.ndarray[Any, Any], kind: pa.DataType) -> pa.Array:
    """An Arrow array over a numpy array's buffer. ``pa.array(numpy)`` would import pandas
    (about half a second, paid inside the first flush of a run) to check for pandas types."""
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def read_series(
    chunks: Iterable[bytes], name: str, *, with_times: bool = False
) -> tuple[np.ndarray[Any, Any], ...]:
    """(steps, values[, times in µs]) of one metric across chunks, in logging order."""
    wanted = ["step", "value", *(["time_us"] if with_times else [])]
    columns: list[list[np.ndarray[Any, Any]]] = [[], [], []]
    for data in chunks:
        table = _read_metric(pq.ParquetFile(io.BytesIO(data)), name, wanted)
        if table is not None:
            for i, column in enumerate(wanted):
                columns[i].append(table.column(column).to_numpy())
    dtypes = (np.int64, np.float64, np.int64)
    out = tuple(
        np.concatenate(c) if c else np.zeros(0, dtype=d)
        for c, d in zip(columns, dtypes, strict=True)
    )
    return out if with_times else out[:2]


def _read_metric(chunk: pq.ParquetFile, name: str, wanted: list[str]) -> pa.Table | None:
    metadata = chunk.schema_arrow.metadata or {}
    if _INDEX_KEY.encode() in metadata:
        names = json.loads(metadata[_INDEX_KEY.encode()])
        if name not in names:
            return None
        return chunk.read_row_group(names.index(name), columns=wanted, use_threads=False)
    # The first chunk layout: one long table with a dictionary-encoded metric column.
    table = chunk.read(columns=["metric", *wanted], use_threads=False)
    metric = table.column("metric").combine_chunks()
    names = metric.dictionary.to_pylist()
    if name not in names:
        return None
    return table.filter(pa.array(metric.indices.to_numpy() == names.index(name)))
