"""Datasets at scale: storage of versions, `data add` memory, small answers from big tables.

    python benchmarks/scale_data.py            # 10k, 100k and 1M rows (the 1M run takes minutes)
    python benchmarks/scale_data.py --quick    # 10k and 100k rows
    python benchmarks/scale_data.py --sizes 10000,300000

Per size, a CSV of N rows (id, five words and a number, a label, a score: about 55 bytes a row)
is added to a fresh repository with the CLI (`fmforge data add`, wall time and peak RSS from
/usr/bin/time, or psutil where it is missing). Then:

- a second version with 1% of the rows (chosen at random) edited, added the same way: the
  bytes the object store grew by (files on disk), against what the first version grew it by;
- in a second dataset, the same first version (it stores nothing: its chunks are there) and
  then one row edited: bytes stored, against the first version's;
- `data show` (5 sample rows) and `data show --where "id = 4242"`, in process (warm) and
  through the CLI, beside DuckDB querying the first version's own Parquet chunk files, copied
  out of the object store to a directory (`read_parquet` over the list, `LIMIT 5` and
  `WHERE id = 4242`, a fresh connection each time); these once all sizes are built, the sizes
  taken in turn for 5 rounds (so that a busy moment of the shared machine falls on all of them
  alike), 9 times a round in process, once through the CLI: medians;
- `data diff` of the two versions, in process, beside reading both versions in full.

The bars compare the largest size with the smallest (growth) and ours with the baselines.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
]  # fmt: skip


def write_csv(path: Path, texts: list[str], labels: np.ndarray, scores: np.ndarray) -> None:
    with path.open("w") as out:
        out.write("id,text,label,score\n")
        for i, text in enumerate(texts):
            out.write(f"{i},{text},{labels[i]},{scores[i]}\n")


def files(n: int, where: Path) -> dict[str, Path]:
    """a.csv (N rows), b.csv (1% of the texts edited), c.csv (one text edited)."""
    rng = np.random.default_rng(n)
    picks = rng.integers(0, len(WORDS), size=(n, 5))
    texts = [" ".join(WORDS[w] for w in row) + f" {i % 9973}" for i, row in enumerate(picks)]
    labels = np.array(["spam", "ham", "other"])[rng.integers(0, 3, n)]
    scores = rng.integers(0, 100_000, n) / 1000
    out = {name: where / f"{name}.csv" for name in "abc"}
    write_csv(out["a"], texts, labels, scores)
    edited = list(texts)
    for i in rng.choice(n, max(n // 100, 1), replace=False):
        edited[i] += " edited"
    write_csv(out["b"], edited, labels, scores)
    one = list(texts)
    one[n // 2] += " edited"
    write_csv(out["c"], one, labels, scores)
    return out


def cli(root: Path, *args: str) -> tuple[float, int]:
    """Run ``fmforge --store ROOT ARGS``: (wall seconds, peak RSS in bytes)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    command = [sys.executable, "-m", "fmforge", "--store", str(root), *args]
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    began = time.perf_counter()
    if timer:
        done = subprocess.run(
            ["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - began
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        return wall, int(peak.group(1)) * 1024 if peak else 0
    import psutil

    process = psutil.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak_rss = 0
    while process.poll() is None:
        try:
            peak_rss = max(peak_rss, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    if process.returncode:
        raise RuntimeError(f"fmforge {' '.join(args)} failed")
    return time.perf_counter() - began, peak_rss


def median_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def store_size(root: Path) -> int:
    """Bytes of every object file in the repository's store."""
    objects = root / ".fmforge" / "objects"
    return sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())


def add(root: Path, name: str, path: Path) -> tuple[float, int, int]:
    """``fmforge data add``: (wall seconds, peak RSS, bytes the store grew by)."""
    before = store_size(root)
    wall, peak = cli(root, "data", "add", name, str(path))
    return wall, peak, store_size(root) - before


CONDITION = "id = 4242"


def measure(n: int, here: Path) -> tuple[dict[str, float], Path, list[str]]:
    """Build a repository of ``n`` rows under ``here`` and measure what does not race the
    other sizes: (figures, the repository, the first version's chunk files copied out)."""
    from fmforge.data import diff_datasets, read_table, resolve, where
    from fmforge.data.storage import load_manifest
    from fmforge.repository import Repository

    out: dict[str, float] = {"rows": n}
    csv = files(n, here)
    out["file_bytes"] = csv["a"].stat().st_size
    root = here / "repo"
    root.mkdir()
    Repository.init(root).close()
    out["add_s"], out["add_rss"], out["v1_bytes"] = add(root, "d", csv["a"])
    out["add2_s"], out["add2_rss"], out["v2_bytes"] = add(root, "d", csv["b"])
    add(root, "one", csv["a"])  # the same table: nothing new is stored
    out["one_v2_bytes"] = add(root, "one", csv["c"])[2]
    out["one_v1_bytes"] = out["v1_bytes"]
    with Repository.open(root) as repo:
        assert where(repo, "d@v1", CONDITION).num_rows == 1
        report = diff_datasets(repo, "d@v1", "v2")
        assert report.added == report.removed == max(n // 100, 1)
        out["diff_s"] = median_of(3, lambda: diff_datasets(repo, "d@v1", "v2"))
        out["full_s"] = median_of(3, lambda: (read_table(repo, "d@v1"), read_table(repo, "d@v2")))
        manifest = load_manifest(repo.objects, resolve(repo, "d@v1").manifest)
        chunks = here / "chunks"
        chunks.mkdir()
        paths = []
        for number, chunk in enumerate(manifest["chunks"]):
            path = chunks / f"{number:06d}.parquet"
            path.write_bytes(repo.objects.get(chunk["digest"]))
            paths.append(str(path))
        out["chunks"] = len(paths)
    out["diff_cli_s"], out["diff_rss"] = cli(root, "data", "diff", "d@v1", "v2")
    return out, root, paths


def reads(states: list[tuple[dict[str, float], Path, list[str]]], rounds: int) -> None:
    """`data show` and `--where` at every size, in process, through the CLI and as DuckDB over
    the chunk files: the sizes taken in turn, round after round, so that a busy moment of the
    machine falls on all of them alike; medians into each size's figures."""
    import duckdb

    from fmforge.data import head, where
    from fmforge.repository import Repository

    def duck(sql: str, paths: list[str]) -> None:
        connection = duckdb.connect()
        connection.execute(sql, [paths]).to_arrow_table()
        connection.close()

    runs: dict[tuple[int, str], list[float]] = {}
    repos = [Repository.open(root) for _, root, _ in states]
    try:
        for _ in range(rounds):
            for number, ((_, root, paths), repo) in enumerate(zip(states, repos, strict=True)):
                timings: dict[str, Callable[[], object]] = {
                    "show_s": partial(head, repo, "d@v1", 5),
                    "where_s": partial(where, repo, "d@v1", CONDITION),
                    "duck_show_s": partial(duck, "SELECT * FROM read_parquet(?) LIMIT 5", paths),
                    "duck_where_s": partial(
                        duck, f"SELECT * FROM read_parquet(?) WHERE {CONDITION}", paths
                    ),
                }
                for name, fn in timings.items():
                    fn()  # warm
                    for _ in range(9):
                        began = time.perf_counter()
                        fn()
                        runs.setdefault((number, name), []).append(time.perf_counter() - began)
                runs.setdefault((number, "show_cli_s"), []).append(
                    cli(root, "data", "show", "d@v1")[0]
                )
                runs.setdefault((number, "where_cli_s"), []).append(
                    cli(root, "data", "show", "d@v1", "--where", CONDITION)[0]
                )
    finally:
        for repo in repos:
            repo.close()
    for (number, name), times in runs.items():
        states[number][0][name] = statistics.median(times)


def rows_for(results: list[dict[str, float]]) -> list[Row]:
    small, large = results[0], results[-1]
    mb = 1e6
    rows = []
    for r in results:
        ratio = r["v2_bytes"] / r["v1_bytes"]
        rows.append(
            Row(f"1% of {r['rows']:,.0f} rows edited: bytes the second version stored",
                f"{r['v2_bytes'] / mb:.3f} MB", f"first version {r['v1_bytes'] / mb:.2f} MB",
                ratio, "<= 0.05", ratio <= 0.05)
        )  # fmt: skip
    one = large["one_v2_bytes"] / large["one_v1_bytes"]
    big, few = f"{large['rows']:,.0f}", f"{small['rows']:,.0f}"
    rows.append(
        Row(f"one row of {big} edited: bytes stored", f"{large['one_v2_bytes'] / 1e3:.1f} kB",
            f"first version {large['one_v1_bytes'] / mb:.2f} MB",
            one, "<= 1% of the first version", one <= 0.01)
    )  # fmt: skip
    limit = 2 * large["file_bytes"] + 250 * mb
    rows.append(
        Row(f"`data add` peak memory, {big} rows ({large['file_bytes'] / mb:.0f} MB CSV)",
            f"{large['add_rss'] / mb:.0f} MB", f"2 x file + 250 MB = {limit / mb:.0f} MB",
            large["add_rss"] / limit, "<= 2x the file + 250 MB", large["add_rss"] <= limit)
    )  # fmt: skip
    for name, label in (
        ("show", "`data show` 5-row sample"),
        ("where", 'selective `--where "id = 4242"`'),
    ):
        growth = large[f"{name}_s"] / small[f"{name}_s"]
        rows.append(
            Row(f"{label}, in process, {big} vs {few} rows",
                f"{large[f'{name}_s'] * 1e3:.1f} ms", f"{small[f'{name}_s'] * 1e3:.1f} ms",
                growth, "<= 2x", growth <= 2)
        )  # fmt: skip
        cli_growth = large[f"{name}_cli_s"] / small[f"{name}_cli_s"]
        rows.append(
            Row(f"{label}, CLI (start-up included), {big} vs {few} rows",
                f"{large[f'{name}_cli_s']:.2f} s", f"{small[f'{name}_cli_s']:.2f} s",
                cli_growth, "<= 2x", cli_growth <= 2)
        )  # fmt: skip
        duck = large[f"duck_{name}_s"]
        rows.append(
            Row(f"{label}, {big} rows, vs DuckDB on its {large['chunks']:.0f} Parquet chunks",
                f"{large[f'{name}_s'] * 1e3:.1f} ms", f"DuckDB {duck * 1e3:.1f} ms",
                large[f"{name}_s"] / duck, "<= 2x", large[f"{name}_s"] <= 2 * duck)
        )  # fmt: skip
    share = large["diff_s"] / large["full_s"]
    rows.append(
        Row(f"`data diff`, 1% edited, {large['rows']:,.0f} rows",
            f"{large['diff_s']:.3f} s", f"reading both in full {large['full_s']:.3f} s",
            share, "<= 0.25x", share <= 0.25)
    )  # fmt: skip
    return rows


def growth_table(results: list[dict[str, float]]) -> None:
    print("\n| rows | CSV | `data add` (first; second) | peak RSS (first; second) | "
          "1% edit stored | one row stored | "
          "show (in process / CLI) | --where (in process / CLI) | diff (full read) | "
          "`data diff` CLI peak RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rows']:,.0f} | {r['file_bytes'] / 1e6:.1f} MB | "
            f"{r['add_s']:.2f} s; {r['add2_s']:.2f} s | "
            f"{r['add_rss'] / 1e6:.0f} MB; {r['add2_rss'] / 1e6:.0f} MB | "
            f"{r['v2_bytes'] / r['v1_bytes']:.2%} | "
            f"{r['one_v2_bytes'] / r['one_v1_bytes']:.2%} | "
            f"{r['show_s'] * 1e3:.1f} ms / {r['show_cli_s']:.2f} s | "
            f"{r['where_s'] * 1e3:.1f} ms / {r['where_cli_s']:.2f} s | "
            f"{r['diff_s'] * 1e3:.0f} ms ({r['full_s'] * 1e3:.0f} ms) | "
            f"{r['diff_rss'] / 1e6:.0f} MB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k rows only")
    parser.add_argument("--sizes", help="comma-separated row counts, smallest first")
    args = parser.parse_args()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    if min(sizes) <= 4242:
        parser.error("sizes must exceed 4,242 rows (the --where figure looks up id 4242)")
    states = []
    with tempfile.TemporaryDirectory(prefix="fmforge-scale-data-") as scratch:
        for n in sizes:
            began = time.perf_counter()
            here = Path(scratch) / str(n)
            here.mkdir()
            states.append(measure(n, here))
            print(f"{n:,} rows measured in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        reads(states, rounds=5)
    results = [state[0] for state in states]
    print_table("Scale: datasets", rows_for(results))
    growth_table(results)


if __name__ == "__main__":
    main()
