"""Each detector on curves with planted faults, and no false alarm on clean curves."""

from __future__ import annotations

import numpy as np
import pytest

from fmforge.tracking import (
    GradientExplosion,
    LossSpike,
    NonFinite,
    Plateau,
    ThroughputCollapse,
    default_detectors,
)
from fmforge.tracking.detectors import Detector


def clean_curves(steps: int = 10_000, seed: int = 0) -> dict[str, np.ndarray]:
    """A noisy, decaying loss, a noisy gradient norm and a jittery throughput."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    loss = 2.5 * np.exp(-t / 3000) + 0.3 + rng.normal(0, 0.03, steps)
    return {
        "train/loss": loss,
        "grad_norm": np.abs(1.0 + rng.normal(0, 0.2, steps)),
        "samples_per_second": 900 + rng.normal(0, 40, steps),
    }


def feed(detector: Detector, metric: str, values: np.ndarray, chunk: int = 977) -> list:
    """Feed the values in chunks, as the writer thread does."""
    found = []
    steps = np.arange(values.size)
    for start in range(0, values.size, chunk):
        found += detector.check(metric, steps[start : start + chunk], values[start : start + chunk])
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_false_alarm_on_clean_curves(seed: int) -> None:
    for detector in default_detectors():
        for metric, values in clean_curves(seed=seed).items():
            if detector.watches(metric):
                assert feed(detector, metric, values) == [], (detector.name, metric)


def test_nan_and_inf_are_found_once_per_run_of_them() -> None:
    values = clean_curves()["train/loss"]
    values[1234] = np.nan
    values[5000:5003] = np.inf
    found = feed(NonFinite(), "train/loss", values)
    assert [(a.step, a.severity) for a in found] == [(1234, "error"), (5000, "error")]


def test_a_loss_spike_is_found_at_its_step() -> None:
    values = clean_curves()["train/loss"]
    values[4321] += 1.5
    found = feed(LossSpike(), "train/loss", values)
    assert [a.step for a in found] == [4321]
    assert "robust z-score" in found[0].evidence


def test_a_gradient_explosion_is_found() -> None:
    values = clean_curves()["grad_norm"]
    values[7000] = 50.0
    found = feed(GradientExplosion(), "grad_norm", values)
    assert [a.step for a in found] == [7000]


def test_a_throughput_collapse_is_found_and_a_pause_is_not() -> None:
    values = clean_curves()["samples_per_second"]
    values[3000] = 10.0  # one slow step: a pause, not a collapse
    values[8000:8010] = 100.0
    found = feed(ThroughputCollapse(), "samples_per_second", values)
    assert [a.step for a in found] == [8004]  # the fifth value in a row under 30%


def test_a_plateau_is_found_once() -> None:
    values = np.concatenate([np.linspace(2.0, 1.0, 500), np.full(2000, 1.0)])
    found = feed(Plateau(patience=1000), "train/loss", values)
    assert len(found) == 1
    assert found[0].step == 499 + 1000


def test_detectors_watch_only_their_metrics() -> None:
    assert LossSpike().watches("eval/loss")
    assert not LossSpike().watches("accuracy")
    assert GradientExplosion().watches("grad_norm")
    assert LossSpike(metrics=("accuracy",)).watches("accuracy")


def test_a_throughput_collapse_must_last_in_wall_time() -> None:
    """CPU noise (a slow stretch of many fast steps) is not a collapse; a stall for minutes is."""
    values = clean_curves()["samples_per_second"]
    times = np.arange(values.size) * 0.01  # 100 steps a second
    values[2000:2100] = 50.0  # 100 slow steps: one second of another process on the CPU
    values[6000:9000] = 50.0  # 30 seconds of a stalled data loader
    detector = ThroughputCollapse()
    found = []
    steps = np.arange(values.size)
    for start in range(0, values.size, 977):
        part = slice(start, start + 977)
        found += detector.check("samples_per_second", steps[part], values[part], times=times[part])
    assert [a.step for a in found] == [6000 + 2000]  # 20 s into the stall, once
    assert "for 20 s" in found[0].evidence
    assert detector.uses_times
