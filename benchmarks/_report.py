"""Shared by the benchmark scripts: timing and the results table (ours beside the baseline)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    figure: str
    ours: str
    baseline: str
    ratio: float | None
    bar: str
    met: bool | None  # None: a figure for information, with no bar


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    return min(timed(fn) for _ in range(repeats))


def rate(n: int, seconds: float) -> str:
    per_second = n / seconds
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.0f} /s"


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n## {title}\n")
    print(
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {__import__('os').cpu_count()} cores\n"
    )
    print("| figure | ours | baseline | ratio | bar | met |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        print(
            f"| {r.figure} | {r.ours} | {r.baseline} | {ratio} | {r.bar} | "
            f"{'' if r.met is None else 'yes' if r.met else '**no**'} |"
        )
