"""Object store throughput on 1 GB of model-like float data, beside blake3 on one core.

    python benchmarks/objects.py           # 1 GiB
    python benchmarks/objects.py --quick   # 256 MiB

Compression is off (float weights barely compress). Each measured operation runs in a fresh
child process so its peak resident memory (VmHWM) is its own. Also printed, as the physical
references of this machine: blake3 on one core, and writing the same bytes + fsync.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

CHUNK = 8 << 20


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_weights(path: Path, size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    with open(path, "wb") as out:
        for _ in range(size // CHUNK):
            out.write(rng.standard_normal(CHUNK // 4, dtype=np.float32).tobytes())


def stage(name: str, data: Path, root: Path) -> None:
    """Run one operation and print 'seconds peak_rss_mb' (in a child process)."""
    import blake3

    from fmforge.objects import LocalObjectStore

    store = LocalObjectStore(root, compression="off")
    start = time.perf_counter()
    if name == "blake3":
        # The physical reference: hashing alone, on one core (reads are not timed).
        hasher = blake3.blake3()
        hashing = 0.0
        with open(data, "rb") as handle:
            while chunk := handle.read(CHUNK):
                began = time.perf_counter()
                hasher.update(chunk)
                hashing += time.perf_counter() - began
        print(f"{hashing} {peak_rss_mb()}")
        return
    if name == "write_fsync":
        with open(data, "rb") as src, open(root / "copy.bin", "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    elif name == "put":
        print(store.put(data), file=sys.stderr)
    elif name == "get":
        digest = (root / "digest").read_text()
        with store.open(digest) as reader:
            while reader.read(CHUNK):
                pass
    print(f"{time.perf_counter() - start} {peak_rss_mb()}")


def run_stage(name: str, data: Path, root: Path) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--stage", name, str(data), str(root)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if name == "put":
        (root / "digest").write_text(result.stderr.strip().splitlines()[-1])
    seconds, rss = result.stdout.split()
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stage", nargs=3, metavar=("NAME", "DATA", "ROOT"))
    args = parser.parse_args()
    if args.stage:
        stage(args.stage[0], Path(args.stage[1]), Path(args.stage[2]))
        return
    size = (256 if args.quick else 1024) << 20
    gb = size / 1e9
    with tempfile.TemporaryDirectory(prefix="fmforge-bench-", dir=os.getcwd()) as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "weights.bin"
        write_weights(data, size)
        os.sync()  # start every stage with nothing dirty in the page cache
        root = tmp / "objects"
        root.mkdir()
        hash_s, hash_rss = run_stage("blake3", data, root)
        write_s, _ = run_stage("write_fsync", data, root)
        (root / "copy.bin").unlink()
        os.sync()
        put_s, put_rss = run_stage("put", data, root)
        get_s, get_rss = run_stage("get", data, root)
    reference = gb / hash_s
    rows = [
        Row(
            f"object put of {size >> 20} MiB float32 from a file (durable: fsync + rename)",
            f"{gb / put_s:.2f} GB/s", f"{reference:.2f} GB/s blake3, one core",
            (gb / put_s) / reference, ">= 0.5x", (gb / put_s) / reference >= 0.5,
        ),
        Row(
            f"object get of {size >> 20} MiB, streamed and hash-verified",
            f"{gb / get_s:.2f} GB/s", f"{reference:.2f} GB/s blake3, one core",
            (gb / get_s) / reference, ">= 0.5x", (gb / get_s) / reference >= 0.5,
        ),
        Row(
            "peak resident memory of put / get (object is "
            f"{size >> 20} MiB; blake3 reference process {hash_rss:.0f} MB)",
            f"{put_rss:.0f} / {get_rss:.0f} MB", "", None, "bounded (independent of size)",
            max(put_rss, get_rss) < hash_rss + 128,
        ),
        Row(
            "reference: write the same bytes + fsync (this disk)",
            f"{gb / write_s:.2f} GB/s", "", None, "", True,
        ),
    ]  # fmt: skip
    print_table("Object store (benchmarks/objects.py)", rows)


if __name__ == "__main__":
    main()
