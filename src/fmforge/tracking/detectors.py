"""Anomaly detectors, run by the writer thread on every flushed chunk of a run.

Each detector sees one metric's new (steps, values) after the earlier ones (it keeps the state
it needs, e.g. a rolling window) and returns the anomalies it finds. Thresholds are robust
statistics over a trailing window, so one spike does not hide the next and a slow trend is not
an anomaly.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Anomaly:
    detector: str
    metric: str
    step: int
    value: float | None
    severity: str  # "warning" | "error"
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {
            "detector": self.detector, "metric": self.metric, "step": self.step,
            "value": self.value, "severity": self.severity, "evidence": self.evidence,
        }  # fmt: skip


@dataclass
class Detector:
    """Base: which metrics (glob patterns) a detector watches."""

    metrics: tuple[str, ...] = ("*",)
    name: str = "detector"
    uses_times = False  # True: ``check`` takes ``times=`` (seconds since the epoch)

    def watches(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p in self.metrics)

    def _anomaly(
        self, metric: str, step: int, value: float | None, severity: str, evidence: str
    ) -> Anomaly:
        return Anomaly(self.name, metric, step, value, severity, evidence)

    def check(
        self, metric: str, steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
    ) -> list[Anomaly]:
        raise NotImplementedError


@dataclass
class NonFinite(Detector):
    """NaN or Inf in any watched metric: the first of each run of them."""

    name: str = "non_finite"
    _inside: dict[str, bool] = field(default_factory=dict)

    def check(
        self, metric: str, steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
    ) -> list[Anomaly]:
        found = []
        bad = ~np.isfinite(values)
        inside = self._inside.get(metric, False)
        for i in range(values.size):
            if bad[i] and not inside:
                found.append(
                    self._anomaly(
                        metric,
                        int(steps[i]),
                        None,
                        "error",
                        f"{metric} is {values[i]} at step {int(steps[i])}",
                    )
                )
            inside = bool(bad[i])
        self._inside[metric] = inside
        return found


@dataclass
class _Rolling(Detector):
    """Judges each finite value against a trailing window of the metric's earlier values, and
    reports when ``patience`` values in a row are anomalous (once per such streak)."""

    window: int = 50
    warmup: int = 20
    severity: str = "warning"
    patience: int = 1
    learn_outliers: bool = True  # whether anomalous values join the window
    _history: dict[str, deque[float]] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)

    def check(
        self, metric: str, steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
    ) -> list[Anomaly]:
        found = []
        history = self._history.setdefault(metric, deque(maxlen=self.window))
        streak = self._streak.get(metric, 0)
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            if not math.isfinite(value):
                continue
            evidence = None
            if len(history) >= self.warmup:
                evidence = self._judge(value, np.fromiter(history, float))
            if evidence is None:
                streak = 0
            else:
                streak += 1
                if streak == self.patience:
                    found.append(self._anomaly(metric, int(step), value, self.severity, evidence))
                if not self.learn_outliers:
                    continue
            history.append(value)
        self._streak[metric] = streak
        return found

    def _judge(self, value: float, window: np.ndarray[Any, Any]) -> str | None:
        """Why ``value`` is anomalous given the trailing ``window``, or None."""
        raise NotImplementedError


@dataclass
class LossSpike(_Rolling):
    """A value whose robust z-score (median and MAD of the window) is above ``threshold``."""

    metrics: tuple[str, ...] = ("*loss*",)
    name: str = "loss_spike"
    threshold: float = 6.0

    def _judge(self, value: float, window: np.ndarray[Any, Any]) -> str | None:
        median = float(np.median(window))
        mad = float(np.median(np.abs(window - median))) * 1.4826 or 1e-12
        z = (value - median) / mad
        if z <= self.threshold:
            return None
        return f"robust z-score {z:.1f} over the last {window.size} values (median {median:.4g})"


@dataclass
class GradientExplosion(_Rolling):
    """A gradient norm above ``factor`` times its trailing median."""

    metrics: tuple[str, ...] = ("*grad*norm*",)
    name: str = "gradient_explosion"
    severity: str = "error"
    factor: float = 10.0

    def _judge(self, value: float, window: np.ndarray[Any, Any]) -> str | None:
        median = float(np.median(window))
        if median <= 0 or value <= self.factor * median:
            return None
        return f"{value:.4g} is {value / median:.0f}x the trailing median {median:.4g}"


@dataclass
class ThroughputCollapse(_Rolling):
    """Throughput below ``fraction`` of its trailing median, sustained: for at least
    ``sustain_s`` seconds of wall time and ``patience`` values in a row. A slow stretch of a
    few steps (garbage collection, a checkpoint, another process taking the CPU) is not a
    collapse, however many steps it spans; a data loader that stalls for minutes is. Without
    the values' times (``check`` called without ``times``) only ``patience`` counts."""

    metrics: tuple[str, ...] = ("*per_second*", "*throughput*")
    name: str = "throughput_collapse"
    fraction: float = 0.3
    patience: int = 5
    sustain_s: float = 20.0
    learn_outliers: bool = False  # a collapse does not become the new normal
    uses_times = True
    _since: dict[str, float] = field(default_factory=dict)  # when the current drop began
    _reported: set[str] = field(default_factory=set)

    def check(
        self,
        metric: str,
        steps: np.ndarray[Any, Any],
        values: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any] | None = None,
    ) -> list[Anomaly]:
        if times is None:
            return super().check(metric, steps, values)
        found = []
        history = self._history.setdefault(metric, deque(maxlen=self.window))
        streak = self._streak.get(metric, 0)
        for step, value, at in zip(steps.tolist(), values.tolist(), times.tolist(), strict=True):
            if not math.isfinite(value):
                continue
            evidence = None
            if len(history) >= self.warmup:
                evidence = self._judge(value, np.fromiter(history, float))
            if evidence is None:
                streak = 0
                self._since.pop(metric, None)
                self._reported.discard(metric)
                history.append(value)
                continue
            streak += 1
            began = self._since.setdefault(metric, at)
            lasted = at - began
            if (
                streak >= self.patience
                and lasted >= self.sustain_s
                and metric not in (self._reported)
            ):
                self._reported.add(metric)
                evidence += f", for {lasted:.0f} s"
                found.append(self._anomaly(metric, int(step), value, self.severity, evidence))
        self._streak[metric] = streak
        return found

    def _judge(self, value: float, window: np.ndarray[Any, Any]) -> str | None:
        median = float(np.median(window))
        if median <= 0 or value >= self.fraction * median:
            return None
        return (
            f"{self.patience} values in a row under {self.fraction:.0%} of the trailing median "
            f"{median:.4g} (now {value:.4g})"
        )


@dataclass
class Plateau(Detector):
    """No improvement (relative ``min_delta``) of a watched metric in ``patience`` steps."""

    metrics: tuple[str, ...] = ("*loss*",)
    name: str = "plateau"
    patience: int = 1000
    min_delta: float = 1e-3
    mode: str = "min"
    _best: dict[str, tuple[float, int]] = field(default_factory=dict)
    _reported: dict[str, int] = field(default_factory=dict)

    def check(
        self, metric: str, steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
    ) -> list[Anomaly]:
        found = []
        sign = 1.0 if self.mode == "min" else -1.0
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            if not math.isfinite(value):
                continue
            best, at = self._best.get(metric, (math.inf, step))
            if sign * value < best - abs(best) * self.min_delta:
                self._best[metric] = (sign * value, step)
                continue
            self._best.setdefault(metric, (sign * value, step))
            if step - at >= self.patience and self._reported.get(metric) != at:
                self._reported[metric] = at
                found.append(
                    self._anomaly(
                        metric,
                        step,
                        value,
                        "warning",
                        f"no improvement beyond {self.min_delta:.0e} since step {at} "
                        f"({step - at} steps)",
                    )
                )
        return found


def default_detectors() -> list[Detector]:
    return [NonFinite(), LossSpike(), GradientExplosion(), ThroughputCollapse(), Plateau()]
