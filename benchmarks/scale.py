"""Scale: what a read costs as runs grow long and runs grow many (issue 12).

    python benchmarks/scale.py              # every section at full size
    python benchmarks/scale.py runs         # one section
    python benchmarks/scale.py --quick      # smaller sizes

Section ``runs``: runs of 100, 1,000 and 10,000 chunks (one flush each, 10 steps x 5 metrics a
flush, written through ``Run.flush`` in a loop), served by a real ``fmforge ui`` process.
Baseline, measured in the same run: the same request on an old-format copy of each run (the
same chunks, recorded without summary pyramids, so read from every chunk as before). Figures:
a chart request (``/api/runs/{id}/series?metric=loss&width=1000``) cold (first request to the
server for that run) and warm, and zoomed (``start=100&end=200``); ``/api/runs`` latencies
while 5 chart requests of the 10,000-chunk run are in flight; ``fmforge runs show``
(in-process, start-up excluded); ``fmforge runs ls -n 20`` over 100 to 5,000 runs beside
``--all``. Memory is the peak Python allocation of the same call in-process (tracemalloc).

Section ``ledger``: ledgers of 10,000 and 1,000,000 events (runs logging a chunk per event,
each chunk a real object, recorded through ``Repository.record``). Figures, in-process (CLI
start-up excluded), median of 3 after one call that brings the views up to date: ``fmforge log
--since`` a time after the newest event (returns nothing), and ``fmforge gc --dry-run``.
Baseline, measured in the same run: decoding every event of the same ledger (what both
answers cost before the seq-by-time bisection and the live-references projection).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

METRICS = ("loss", "lr", "grad_norm", "accuracy", "tokens_per_second")
STEPS_PER_FLUSH = 10
ZOOM = "&start=100&end=200"


# ---- building ---------------------------------------------------------------------------


def long_run(repo: Any, chunks: int) -> str:
    """A run of ``chunks`` flushes, each 10 steps x 5 metrics, through the real writer."""
    from fmforge.tracking.runs import Run

    rng = np.random.default_rng(chunks)
    run = Run(repo, "scale", name=f"run-{chunks}", detectors=[], system_interval=None)
    noise = rng.normal(size=(chunks * STEPS_PER_FLUSH, 2)).tolist()
    step = 0
    for _ in range(chunks):
        for _ in range(STEPS_PER_FLUSH):
            a, b = noise[step]
            run.log({"loss": 2.0 / (1 + step / 5000) + 0.02 * a, "lr": 3e-4,
                     "grad_norm": abs(1 + 0.2 * b), "accuracy": min(0.99, step / 1e5),
                     "tokens_per_second": 5000.0 + step % 13}, step=step)  # fmt: skip
            step += 1
        run.flush()
    run.finish()
    return run.id


def old_format_copy(repo: Any, run_id: str) -> str:
    """The same run recorded as fmforge did before pyramids: its chunks, no ``pyramid``."""
    from fmforge.ledger.events import new_event_id
    from fmforge.tracking.events import MetricsLogged, RunStarted

    copy = new_event_id()
    events: list[Any] = [RunStarted({
        "run": copy, "project": "scale", "name": f"old-{copy[-6:]}", "config": {},
        "config_flat": {}, "datasets": [], "base_model": None, "seed": None, "tags": [],
        "started": time.time(),
    })]  # fmt: skip
    for event in repo.ledger.read_stream(f"run/{run_id}"):
        if event.type == "MetricsLogged":
            data = {k: v for k, v in event.data.items() if k != "pyramid"}
            events.append(MetricsLogged(data, refs=(data["chunk"],)))
    for at in range(0, len(events), 5000):  # the most one append takes
        repo.record(f"run/{copy}", events[at : at + 5000])
    return copy


def many_runs(repo: Any, count: int) -> None:
    """``count`` finished runs, each as the events a run writes (5 metric summaries)."""
    from fmforge.tracking.events import MetricsLogged, RunFinished, RunStarted

    summary = {m: {"count": 100, "last": 0.5, "min": 0.1, "max": 0.9, "non_finite": 0,
                   "last_step": 99} for m in METRICS}  # fmt: skip
    for i in range(count):
        run_id = f"run-{i:05d}"
        repo.record(f"run/{run_id}", [
            RunStarted({"run": run_id, "project": "many", "name": run_id, "config": {"i": i},
                        "config_flat": {"i": i}, "datasets": [], "base_model": None,
                        "seed": None, "tags": [], "started": 1e9 + i}),
            MetricsLogged({"chunk": "0" * 64, "bytes": 0, "values": 500, "metrics": summary}),
            RunFinished({"status": "finished", "duration_s": 1.0, "summary": {},
                         "anomalies": 0}),
        ])  # fmt: skip


# ---- measuring --------------------------------------------------------------------------


def on_disk(repo: Any, digest: str) -> int:
    return int(repo.objects.path_of(digest).stat().st_size)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(root: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(root), "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        json.loads(response.read())
    return time.perf_counter() - began


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def cli(root: Path, *args: str) -> Callable[[], float]:
    from typer.testing import CliRunner

    from fmforge.cli.app import app

    runner = CliRunner()

    def call() -> float:
        began = time.perf_counter()
        result = runner.invoke(app, ["--store", str(root), *args])
        elapsed = time.perf_counter() - began
        assert result.exit_code == 0, result.output
        return elapsed

    return call


def chart(root: Path, run_id: str, zoom: str = "") -> tuple[float, float]:
    """Seconds of one chart request: cold (its run's chunks never decoded by this server
    process, a fresh one) and warm (the median of 5 more)."""
    with server(root) as url:
        get(f"{url}/api/runs")  # the server's own first-request costs are not the chart's
        get(f"{url}/api/runs/{run_id}/series?metric=lr&width=1000")
        loss = f"{url}/api/runs/{run_id}/series?metric=loss&width=1000{zoom}"
        return get(loss), median_of(5, lambda: get(loss))


def charts(root: Path, ids: dict[int, tuple[str, str]]) -> dict[int, dict[str, float]]:
    """Chart requests of each size: ours (whole run and zoomed) and the old format's."""
    out: dict[int, dict[str, float]] = {}
    for size, (new, old) in ids.items():
        figures: dict[str, float] = {}
        figures["new_cold"], figures["new_warm"] = chart(root, new)
        figures["new_zoom_cold"], figures["new_zoom_warm"] = chart(root, new, ZOOM)
        figures["old_cold"], figures["old_warm"] = chart(root, old)
        out[size] = figures
    return out


def table_under_load(url: str, run_id: str, requests: int) -> dict[str, float]:
    """``/api/runs`` latencies alone, then while 5 chart requests of ``run_id`` (various
    widths and zooms) are in flight all along."""
    table = f"{url}/api/runs"
    alone = [get(table) for _ in range(requests)]
    stop = threading.Event()
    served = [0]
    rng = np.random.default_rng(0)
    plans = [(int(rng.integers(300, 1600)), int(rng.integers(0, 90_000))) for _ in range(64)]

    def load(seed: int) -> None:
        i = seed
        while not stop.is_set():
            width, start = plans[i % len(plans)]
            zoom = "" if i % 2 else f"&start={start}&end={start + 5000}"
            get(f"{url}/api/runs/{run_id}/series?metric={METRICS[i % 5]}&width={width}{zoom}")
            served[0] += 1
            i += 5

    threads = [threading.Thread(target=load, args=(s,), daemon=True) for s in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    loaded = [get(table) for _ in range(requests)]
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "alone_p99": float(np.percentile(alone, 99)) * 1000,
        "loaded_p50": float(np.percentile(loaded, 50)) * 1000,
        "loaded_p99": float(np.percentile(loaded, 99)) * 1000,
        "charts_served": served[0],
    }


# ---- sections ---------------------------------------------------------------------------


def runs_section(tmp: Path, quick: bool) -> list[Row]:
    from fmforge.repository import Repository
    from fmforge.tracking.overview import metric_overview
    from fmforge.tracking.views import RunsView

    sizes = (100, 1_000) if quick else (100, 1_000, 10_000)
    root = tmp / "runs"
    root.mkdir()
    ids: dict[int, tuple[str, str]] = {}
    build: dict[int, float] = {}
    with Repository.init(root) as repo:
        for size in sizes:
            began = time.perf_counter()
            run_id = long_run(repo, size)
            build[size] = time.perf_counter() - began
            ids[size] = (run_id, old_format_copy(repo, run_id))
        index = repo.view(RunsView)  # caught up once, as a server is
        stored = {}
        for size, (run_id, _) in ids.items():
            events = repo.ledger.read_stream(f"run/{run_id}")
            digests = [(e.data["chunk"], e.data["pyramid"]) for e in events
                       if e.type == "MetricsLogged"]  # fmt: skip
            chunk_bytes = sum(on_disk(repo, c) for c, _ in digests)
            pyramid_bytes = sum(on_disk(repo, p) for p in {p for _, p in digests})
            (blocks,) = index.db.execute(
                "SELECT count(*) FROM metric_blocks JOIN metric_series USING (series) "
                "WHERE run_id = ?", (run_id,)).fetchone()  # fmt: skip
            stored[size] = (chunk_bytes, pyramid_bytes, blocks)
        memory = {
            size: (
                peak_mb(lambda r=run_id: metric_overview(repo, r, "loss", 1000)),
                peak_mb(lambda r=old: metric_overview(repo, r, "loss", 1000)),
            )
            for size, (run_id, old) in ids.items()
        }
    figures = charts(root, ids)
    with server(root) as url:
        load = table_under_load(url, ids[sizes[-1]][0], 100 if quick else 300)
    show = {size: median_of(3, cli(root, "runs", "show", f"run-{size}")) for size in sizes}
    show_old = {
        size: median_of(3, cli(root, "runs", "show", old)) for size, (_, old) in ids.items()
    }
    show_mb = {size: peak_mb(cli(root, "runs", "show", f"run-{size}")) for size in sizes}

    counts = (100, 1_000) if quick else (100, 1_000, 5_000)
    ls: dict[int, tuple[float, float, float]] = {}
    for count in counts:
        many = tmp / f"many-{count}"
        many.mkdir()
        with Repository.init(many) as repo:
            many_runs(repo, count)
            repo.view(RunsView)
        ls[count] = (
            median_of(5, cli(many, "runs", "ls", "-n", "20")),
            median_of(3, cli(many, "runs", "ls", "--all")),
            peak_mb(cli(many, "runs", "ls", "-n", "20")),
        )

    small, large = sizes[0], sizes[-1]
    rows = []
    kinds = (("cold", "new_cold", "old_cold"), ("warm", "new_warm", "old_warm"),
             ("zoomed to steps 100-200, cold", "new_zoom_cold", None),
             ("zoomed to steps 100-200, warm", "new_zoom_warm", None))  # fmt: skip
    for label, key, old in kinds:
        ratio = figures[large][key] / figures[small][key]
        rows.append(Row(
            f"chart request, {large:,} chunks vs {small:,} ({label})",
            f"{figures[large][key] * 1000:.1f} ms vs {figures[small][key] * 1000:.1f} ms",
            f"{figures[large][old] * 1000:.0f} ms old format, {large:,}" if old else "",
            ratio, "<= 2x", ratio <= 2,
        ))  # fmt: skip
    ratio = show[large] / show[small]
    rows.append(Row(f"`runs show`, {large:,} chunks vs {small:,} (in-process)",
                    f"{show[large] * 1000:.0f} ms vs {show[small] * 1000:.0f} ms",
                    f"{show_old[large] * 1000:.0f} ms old format, {large:,}", ratio, "<= 2x",
                    ratio <= 2))  # fmt: skip
    rows.append(Row(f"`/api/runs` p99 while 5 chart requests of the {large:,}-chunk run are "
                    f"in flight ({load['charts_served']} charts served meanwhile)",
                    f"{load['loaded_p99']:.1f} ms (p50 {load['loaded_p50']:.1f} ms)",
                    f"{load['alone_p99']:.1f} ms alone", None, "<= 50 ms",
                    load["loaded_p99"] <= 50))  # fmt: skip
    few, most = counts[0], counts[-1]
    ratio = ls[most][0] / ls[few][0]
    rows.append(Row(f"`runs ls -n 20`, {most:,} runs vs {few:,} (in-process)",
                    f"{ls[most][0] * 1000:.0f} ms vs {ls[few][0] * 1000:.0f} ms",
                    f"{ls[most][1] * 1000:.0f} ms `--all`, {most:,}", ratio, "<= 2x",
                    ratio <= 2))  # fmt: skip
    print_table("Scale: runs (`benchmarks/scale.py runs`)", rows)

    print("\nGrowth (chart requests through the server; memory: peak Python allocation of the "
          "same chart in-process, ours / old format):\n")  # fmt: skip
    print(
        "| chunks | build | chart cold | chart warm | zoomed cold / warm | old format cold "
        "| `runs show` (old format) | memory | on disk: chunks / pyramids; blocks indexed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        c = figures[size]
        chunk_bytes, pyramid_bytes, blocks = stored[size]
        print(f"| {size:,} | {build[size]:.1f} s | {c['new_cold'] * 1000:.1f} ms | "
              f"{c['new_warm'] * 1000:.1f} ms | {c['new_zoom_cold'] * 1000:.1f} / "
              f"{c['new_zoom_warm'] * 1000:.1f} ms | {c['old_cold'] * 1000:.0f} ms | "
              f"{show[size] * 1000:.0f} ms ({show_old[size] * 1000:.0f} ms), "
              f"{show_mb[size]:.1f} MB | {memory[size][0]:.1f} / {memory[size][1]:.1f} MB | "
              f"{chunk_bytes / 1e6:.2f} / {pyramid_bytes / 1e6:.2f} MB / {blocks:,} |")  # fmt: skip
    print("\n| runs | `runs ls -n 20` | `runs ls --all` | memory (-n 20) |")
    print("|---|---|---|---|")
    for count in counts:
        n20, every, mb = ls[count]
        print(f"| {count:,} | {n20 * 1000:.0f} ms | {every * 1000:.0f} ms | {mb:.1f} MB |")
    return rows


# ---- ledger ------------------------------------------------------------------------------


def busy_ledger(root: Path, events: int) -> float:
    """A repository whose ledger holds ``events`` events: 100 runs, each logging chunks (a
    real object every 100 events, the others refer to it too). Returns the build time."""
    from fmforge.repository import Repository
    from fmforge.tracking.events import MetricsLogged, RunStarted

    began = time.perf_counter()
    runs = 100
    per_run = events // runs - 1
    summary = {"count": 50, "last": 0.5, "min": 0.1, "max": 0.9, "non_finite": 0}
    root.mkdir(parents=True)
    with Repository.init(root) as repo:
        for r in range(runs):
            stream = f"run/r{r}"
            repo.record(stream, RunStarted({
                "run": f"r{r}", "project": "scale", "name": f"r{r}", "config": {},
                "config_flat": {}, "datasets": [], "base_model": None, "seed": 0, "tags": [],
                "started": time.time(),
            }))  # fmt: skip
            for start in range(0, per_run, 1000):
                batch = []
                for i in range(start, min(per_run, start + 1000)):
                    if i % 100 == 0:
                        digest = repo.objects.put(f"chunk {r} {i}".encode())
                    step = {**summary, "last_step": i, "step_min": i, "step_max": i}
                    payload = {"chunk": digest, "bytes": 16, "values": 50,
                               "metrics": {"loss": step}}  # fmt: skip
                    batch.append(MetricsLogged(payload, refs=[digest]))  # type: ignore[arg-type]
                repo.record(stream, batch)
    return time.perf_counter() - began


def ledger_section(tmp: Path, quick: bool) -> list[Row]:
    from fmforge.repository import Repository

    sizes = (10_000, 100_000) if quick else (10_000, 1_000_000)
    future = "2100-01-01T00:00:00Z"
    since: dict[int, float] = {}
    dry: dict[int, float] = {}
    decode: dict[int, float] = {}
    first_gc: dict[int, float] = {}
    build: dict[int, float] = {}
    for size in sizes:
        root = tmp / f"ledger-{size}"
        build[size] = busy_ledger(root, size)
        gc_call = cli(root, "gc", "--dry-run")
        first_gc[size] = gc_call()  # brings the live-references view up to date
        since[size] = median_of(3, cli(root, "log", "--since", future))
        dry[size] = median_of(3, gc_call)

        def read_everything(root: Path = root) -> None:
            with Repository.open(root) as repo:
                for _ in repo.ledger.read_all(1):
                    pass

        decode[size] = median_of(1, lambda: timed(read_everything))
    small, large = sizes
    rows = []
    for label, figures in (("`log --since` (after the newest event: nothing)", since),
                           ("`gc --dry-run`", dry)):  # fmt: skip
        ratio = figures[large] / figures[small]
        rows.append(Row(
            f"{label}, {large:,} events vs {small:,} (in-process)",
            f"{figures[large] * 1000:.0f} ms vs {figures[small] * 1000:.0f} ms",
            f"{decode[large] * 1000:.0f} ms decoding every event, {large:,}",
            ratio, "<= 2x", ratio <= 2,
        ))  # fmt: skip
    print_table("Scale: ledger (`benchmarks/scale.py ledger`)", rows)
    print("\n| events | build | `log --since` | `gc --dry-run` (first, catching the view up) "
          "| decoding every event |")  # fmt: skip
    print("|---|---|---|---|---|")
    for size in sizes:
        print(f"| {size:,} | {build[size]:.1f} s | {since[size] * 1000:.0f} ms | "
              f"{dry[size] * 1000:.0f} ms ({first_gc[size]:.1f} s) | "
              f"{decode[size] * 1000:.0f} ms |")  # fmt: skip
    return rows


SECTIONS: dict[str, Callable[[Path, bool], list[Row]]] = {
    "runs": runs_section,
    "ledger": ledger_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"among {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"no section {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    for name in args.sections or list(SECTIONS):
        with tempfile.TemporaryDirectory() as tmp:
            SECTIONS[name](Path(tmp), args.quick)


if __name__ == "__main__":
    main()
