"""System metrics, sampled by the run's writer thread: CPU, memory, disk and network I/O, GPUs.

GPU utilisation and memory come from NVML (``nvidia-ml-py``) when it is installed and finds a
GPU; without one the sampler reports CPU-side figures only.
"""

from __future__ import annotations

import time
from typing import Any

import psutil


class SystemSampler:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the measurement
        self._io = self._counters()
        self._at = time.monotonic()
        self._nvml: Any = None
        self._gpus: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._gpus = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception:  # no NVML, no driver or no GPU: CPU-side figures only
            self._nvml = None

    @staticmethod
    def _counters() -> tuple[float, float, float, float]:
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        return (
            float(disk.read_bytes if disk else 0), float(disk.write_bytes if disk else 0),
            float(net.bytes_sent if net else 0), float(net.bytes_recv if net else 0),
        )  # fmt: skip

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-6)
        io = self._counters()
        rates = [(new - old) / elapsed / 2**20 for new, old in zip(io, self._io, strict=True)]
        self._io, self._at = io, now
        metrics = {
            "system/cpu_percent": self.process.cpu_percent(None),
            "system/rss_mb": self.process.memory_info().rss / 2**20,
            "system/disk_read_mb_per_s": rates[0],
            "system/disk_write_mb_per_s": rates[1],
            "system/net_sent_mb_per_s": rates[2],
            "system/net_recv_mb_per_s": rates[3],
        }
        for index, handle in enumerate(self._gpus):
            utilisation = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            metrics[f"system/gpu{index}/utilization_percent"] = float(utilisation.gpu)
            metrics[f"system/gpu{index}/memory_mb"] = memory.used / 2**20
        return metrics
