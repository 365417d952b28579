"""Prometheus metrics of a serving replica, rendered as the text exposition format.

Counters, gauges and histograms with labels, kept in memory and written out by ``render``
(``/metrics``). No client library: the format is a few lines per series.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MS_BUCKETS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class _Metric:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    buckets: tuple[float, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)


def _labels(values: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render_labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    PREFIX = "fmforge_serving_"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[Metrics], None]] = []
        self.counter("requests_total", "Requests answered, by model and status.")
        self.counter("prompt_tokens_total", "Prompt tokens processed, by model.")
        self.counter("generated_tokens_total", "Tokens generated, by model.")
        self.histogram(
            "queue_seconds", "Seconds requests waited before joining a batch.", LATENCY_BUCKETS
        )
        self.histogram("batch_size", "Rows of each forward pass of the engine.", BATCH_BUCKETS)
        self.histogram("adapter_load_ms", "Milliseconds to load an adapter, by tier.", MS_BUCKETS)
        self.counter("adapter_loads_total", "Adapter loads, by tier and source.")
        self.counter("adapter_evictions_total", "Adapter evictions, by tier.")
        self.gauge("adapter_resident", "1 for each adapter held, by adapter and tier.")
        self.gauge("queue_depth", "Requests waiting, by model.")
        self.gauge("running_sequences", "Sequences in the running batch.")
        self.gauge("cache_bytes", "Bytes held by each cache tier.")

    def counter(self, name: str, help: str) -> None:
        self._metrics[name] = _Metric(name, "counter", help)

    def gauge(self, name: str, help: str) -> None:
        self._metrics[name] = _Metric(name, "gauge", help)

    def histogram(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        self._metrics[name] = _Metric(name, "histogram", help, buckets)

    def collect_with(self, collector: Callable[[Metrics], None]) -> None:
        """``collector`` sets gauges just before each render."""
        self._collectors.append(collector)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            metric = self._metrics[name]
            metric.values[key] = metric.values.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._metrics[name].values[_labels(labels)] = value

    def reset(self, name: str) -> None:
        with self._lock:
            self._metrics[name].values.clear()

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            metric = self._metrics[name]
            counts = metric.counts.setdefault(key, [0] * (len(metric.buckets) + 1))
            counts[bisect.bisect_left(metric.buckets, value)] += 1
            metric.sums[key] = metric.sums.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._metrics[name].values.get(_labels(labels), 0.0)

    def count(self, name: str, **labels: str) -> int:
        with self._lock:
            return sum(self._metrics[name].counts.get(_labels(labels), []))

    def render(self) -> str:
        for collector in self._collectors:
            collector(self)
        lines: list[str] = []
        with self._lock:
            for metric in self._metrics.values():
                full = self.PREFIX + metric.name
                lines.append(f"# HELP {full} {metric.help}")
                lines.append(f"# TYPE {full} {metric.kind}")
                if metric.kind != "histogram":
                    for labels, value in sorted(metric.values.items()):
                        lines.append(f"{full}{_render_labels(labels)} {_number(value)}")
                    continue
                for labels, counts in sorted(metric.counts.items()):
                    running = 0
                    for bound, count in zip((*metric.buckets, math.inf), counts, strict=True):
                        running += count
                        le = (*labels, ("le", _number(bound)))
                        lines.append(f"{full}_bucket{_render_labels(le)} {running}")
                    lines.append(
                        f"{full}_sum{_render_labels(labels)} {_number(metric.sums[labels])}"
                    )
                    lines.append(f"{full}_count{_render_labels(labels)} {running}")
        return "\n".join(lines) + "\n"
