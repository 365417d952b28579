"""Training runs: logging, durable metric chunks, anomaly detection, reading runs back."""

from __future__ import annotations

from fmforge.tracking.detectors import (
    Anomaly,
    Detector,
    GradientExplosion,
    LossSpike,
    NonFinite,
    Plateau,
    ThroughputCollapse,
    default_detectors,
)
from fmforge.tracking.reading import (
    RunNotFound,
    RunRecord,
    dataset_usage,
    list_runs,
    load_run,
    read_metric,
    runs_frame,
)
from fmforge.tracking.runs import AnomalyAction, Run, RunStopped, start_run

__all__ = [
    "Anomaly",
    "AnomalyAction",
    "Detector",
    "GradientExplosion",
    "LossSpike",
    "NonFinite",
    "Plateau",
    "Run",
    "RunNotFound",
    "RunRecord",
    "RunStopped",
    "ThroughputCollapse",
    "dataset_usage",
    "default_detectors",
    "list_runs",
    "load_run",
    "read_metric",
    "runs_frame",
    "start_run",
]
