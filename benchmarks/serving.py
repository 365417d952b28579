"""Serving one base with many LoRA adapters: fmforge's engine against the baselines.

    python benchmarks/serving.py                 # the issue's workload, CPU, one torch thread
    python benchmarks/serving.py --quick         # fewer registered adapters and rounds
    python benchmarks/serving.py --device cuda   # the same on a GPU (benchmarks/serving_gpu.sh)

Model: a random Llama-style causal LM built from a config (hidden 512, 8 layers, ~25M
parameters). Adapters: rank-8 LoRA on q/k/v/o (PEFT, random factors), ~1 MB each in fp32.
Workload: 64 requests x 32 prompt tokens x 32 new tokens, greedy, each naming a random adapter
of N = 1, 8, 64 (and 1,000 registered). Baselines in the same run, rounds interleaved: the base
alone through the same engine (the ceiling), one merged model per adapter (``merge_and_unload``,
one ``generate`` per adapter group), and PEFT's mixed batches (``generate(adapter_names=)``).
Also: cold loads, registry-to-servable time, memory per registered adapter, fairness under
skew, HTTP end to end (the ``openai`` client against ``fmforge serve``) and a hot reload under
load. Prints a table and writes ``--json`` when asked.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servingfiles import write_tokenizer

from fmforge.models import commit_model, reset_branch
from fmforge.repository import Repository
from fmforge.serving import adapters as adapter_files
from fmforge.serving.deployment import Deployment, ServingConfig
from fmforge.serving.engine import GenerationParams, Work

REQUESTS, PROMPT, NEW = 64, 32, 32
PLACE: dict[str, Any] = {"device": "cpu", "dtype": torch.float32}  # the baselines' (see main)
CPU_TIME = False  # --cpu-time: every throughput in tokens per CPU-second of this process


def _clock() -> float:
    return time.process_time() if CPU_TIME else time.perf_counter()


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build(root: Path, registered: int) -> tuple[Path, list[Path], Repository]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = root / "base"
    vocab = write_tokenizer(base)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(base)
    peft_model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0),
    )
    adapters = []
    for i in range(registered):
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=g) * 0.05)
        out = root / f"lora{i}"
        peft_model.save_pretrained(out)
        adapters.append(out)
    (root / "repo").mkdir()
    repo = Repository.init(root / "repo")
    commit_model(repo, "llama", base, "base")
    return base, adapters, repo


def workload(n: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    rng = random.Random(seed)
    names = [f"a{rng.randrange(n)}" for _ in range(REQUESTS)]
    prompts = [[rng.randrange(3, 300) for _ in range(PROMPT)] for _ in range(REQUESTS)]
    return names, prompts


def run_engine(dep: Deployment, names: list[str], prompts: list[list[int]]) -> float:
    """Seconds to answer every request through the engine (all submitted at once): wall
    seconds, or with ``CPU_TIME`` set the process's CPU seconds (stable on a shared machine:
    other processes' load stretches wall time, not the work done)."""
    assert dep.engine is not None
    assert dep.cache is not None
    done = threading.Semaphore(0)
    params = GenerationParams(max_tokens=NEW, temperature=0, ignore_eos=True)
    targets = {name: dep.resolve_now(name) for name in set(names)}
    for target in targets.values():
        if target.spec is not None:
            dep.cache.ensure(target.spec).result()
    start, cpu = time.perf_counter(), time.process_time()
    with dep.engine.scheduler.cond:
        for name, prompt in zip(names, prompts, strict=True):
            t = targets[name]
            dep.cache.hold(t.content)
            dep.engine.submit(
                Work("generate", [prompt], t.content, t.label, _releaser(done), params)
            )
    for _ in names:
        done.acquire()
    return time.process_time() - cpu if CPU_TIME else time.perf_counter() - start


def _releaser(done: threading.Semaphore) -> Any:
    def sink(event: tuple[Any, ...]) -> None:
        if event[0] in ("done", "error"):
            done.release()

    return sink


def run_merged(
    base: Path, adapters: list[Path], names: list[str], prompts: list[list[int]]
) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(base).to(**PLACE).eval()
    total = 0.0
    for name in sorted(set(names)):
        model = PeftModel.from_pretrained(copy.deepcopy(plain), adapters[int(name[1:])])
        merged = model.merge_and_unload().eval()
        rows = [p for n, p in zip(names, prompts, strict=True) if n == name]
        ids = torch.tensor(rows, device=PLACE["device"])
        start = _clock()
        with torch.no_grad():
            merged.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                            min_new_tokens=NEW, do_sample=False, pad_token_id=2)  # fmt: skip
        _sync()
        total += _clock() - start
        del model, merged
    return total


def run_peft(base: Path, adapters: list[Path], names: list[str], prompts: list[list[int]]) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    distinct = sorted(set(names))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base).to(**PLACE),
        adapters[int(distinct[0][1:])],
        adapter_name=distinct[0],
    )
    for name in distinct[1:]:
        model.load_adapter(adapters[int(name[1:])], adapter_name=name)
    model.to(**PLACE).eval()
    ids = torch.tensor(prompts, device=PLACE["device"])
    start = _clock()
    with torch.no_grad():
        model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
            min_new_tokens=NEW, do_sample=False, pad_token_id=2, adapter_names=names,
        )  # fmt: skip
    _sync()
    return _clock() - start


def _sync() -> None:
    if str(PLACE["device"]).startswith("cuda"):
        torch.cuda.synchronize()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="throughput per CPU-second of this process instead of per wall second",
    )
    parser.add_argument("--rounds", type=int, help="throughput rounds (default 3, quick 1)")
    parser.add_argument(
        "--throughput-only", action="store_true",
        help="only base-only against ours at N = 1, 8, 64, rounds interleaved",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CPU_TIME
    CPU_TIME = args.cpu_time
    if args.device != "cpu":
        PLACE.update(device=args.device, dtype=torch.bfloat16)
    registered = 64 if args.throughput_only else (200 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    results: dict[str, Any] = {
        "device": args.device, "threads": args.threads, "clock": "cpu" if CPU_TIME else "wall",
    }  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="fmforge-bench-serving-"))
    try:
        started = time.perf_counter()
        base, adapters, repo = build(root, registered)
        commit_s = []
        for i, path in enumerate(adapters):
            t0 = time.perf_counter()
            commit_model(repo, f"a{i}", path, "adapter", base="llama@main")
            commit_s.append(time.perf_counter() - t0)
        file_bytes = (adapters[0] / "adapter_model.safetensors").stat().st_size
        results["setup_s"] = time.perf_counter() - started
        results["commit_ms_p50"] = statistics.median(commit_s) * 1000
        results["adapter_file_bytes"] = file_bytes
        from transformers import AutoModelForCausalLM

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
        results["base_params"] = params
        print(
            f"model: {params / 1e6:.1f}M parameters; adapter file {file_bytes / 1e6:.2f} MB; "
            f"{registered} adapters committed (p50 {results['commit_ms_p50']:.0f} ms each)"
        )

        config = ServingConfig(
            device=args.device, dtype="float32" if args.device == "cpu" else "auto",
            max_batch=64, max_rank=8, device_cache_bytes=128 << 20, host_cache_bytes=4 << 30,
            flush_s=5,
        )  # fmt: skip
        # registry -> servable: 64 adapters resolved and loaded from the registry (no disk cache)
        dep = Deployment(repo.root, "llama@main", [], config)
        dep.start()
        assert dep.cache is not None
        t0 = time.perf_counter()
        specs = [t.spec for t in dep.resolve_all([f"a{i}" for i in range(64)])]
        for future in [dep.cache.ensure(spec) for spec in specs if spec is not None]:
            future.result()
        for spec in specs:
            assert spec is not None
            dep.cache.place(spec.content)
        results["registry_to_servable_64_s"] = time.perf_counter() - t0
        # cold loads of one adapter: disk tier -> slot, and registry -> slot
        cold_disk, cold_registry = [], []
        for spec in specs[:32]:
            assert spec is not None
            path = (
                Path(config.cache_dir or dep.root / ".fmforge" / "serving-cache")
                / f"{spec.content}.safetensors"
            )
            t0 = time.perf_counter()
            weights = adapter_files.load_file(path)
            dep.cache.slots.write(1, weights)
            cold_disk.append(time.perf_counter() - t0)
        for spec in specs[32:64]:
            assert spec is not None
            t0 = time.perf_counter()
            targets = dep.cache.slots.targets
            weights = adapter_files.load(repo, spec, targets)
            dep.cache.slots.write(1, weights)
            cold_registry.append(time.perf_counter() - t0)
        results["cold_load_disk_ms_p50"] = statistics.median(cold_disk) * 1000
        results["cold_load_registry_ms_p50"] = statistics.median(cold_registry) * 1000
        dep.stop()

        # throughput: base-only, ours at N, merged copies, PEFT mixed; rounds interleaved
        dep = Deployment(repo.root, "llama@main", [], config)
        dep.start()
        through: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        for _ in range(rounds):
            names, prompts = workload(1)
            base_s = run_engine(dep, ["llama"] * REQUESTS, prompts)
            through.setdefault("base", []).append(base_s)
            for n in (1, 8, 64):
                names, prompts = workload(n)
                ours_s = run_engine(dep, names, prompts)
                through.setdefault(f"ours N={n}", []).append(ours_s)
                ratios.setdefault(f"ours N={n}", []).append(base_s / ours_s)
        results["round_ratios"] = ratios
        clock, CPU_TIME = CPU_TIME, False  # the HTTP comparison is in wall seconds
        names, prompts = workload(8)
        results["inprocess_wall_tokens_per_s"] = (
            REQUESTS * NEW / min(run_engine(dep, names, prompts) for _ in range(2))
        )
        CPU_TIME = clock
        if args.throughput_only:
            dep.stop()
            for name, values in ratios.items():
                shown = ", ".join(f"{v:.2f}" for v in values)
                print(f"{name}: x base per round {shown}; median {statistics.median(values):.2f}")
            return
        for n in (1, 8, 64):
            names, prompts = workload(n)
            through[f"peft N={n}"] = [run_peft(base, adapters, names, prompts)]
            through[f"merged N={n}"] = [run_merged(base, adapters, names, prompts)]
            gc.collect()
        tokens = REQUESTS * NEW
        best = {k: tokens / min(v) for k, v in through.items()}
        results["tokens_per_s"] = best
        results["fraction_of_base"] = {k: v / best["base"] for k, v in best.items()}
        for name, values in ratios.items():  # same-round ratios: robust to a shared machine
            results["fraction_of_base"][name] = statistics.median(values)

        # fairness under skew: 90% of 240 requests on a0, the rest spread over a1..a7
        rng = random.Random(1)
        skew = ["a0" if rng.random() < 0.9 else f"a{rng.randrange(1, 8)}" for _ in range(240)]
        assert dep.engine is not None
        waits: dict[str, list[float]] = {"hot": [], "cold": []}
        tickets = []
        done = threading.Semaphore(0)
        params = GenerationParams(max_tokens=16, temperature=0, ignore_eos=True)
        targets = {name: dep.resolve_now(name) for name in set(skew)}
        for t in targets.values():
            assert t.spec is not None
            dep.cache.ensure(t.spec).result()
        fair_dep_batch = dep.engine.max_batch
        dep.engine.max_batch = 16
        with dep.engine.scheduler.cond:
            for name in skew:
                t = targets[name]
                dep.cache.hold(t.content)
                work = Work("generate", [[5] * 16], t.content, t.label, _releaser(done), params)
                tickets.append((name, dep.engine.submit(work)))
        for _ in skew:
            done.acquire()
        dep.engine.max_batch = fair_dep_batch
        for name, ticket in tickets:
            waits["hot" if name == "a0" else "cold"].append(ticket.waited)
        results["fairness_p99_wait_s"] = {k: percentile(v, 0.99) for k, v in waits.items()}
        results["fairness_ratio_cold_over_hot"] = (
            results["fairness_p99_wait_s"]["cold"] / results["fairness_p99_wait_s"]["hot"]
        )
        dep.stop()

        # memory per registered adapter: every registered adapter loaded into the host tier
        dep = Deployment(repo.root, "llama@main", [], config)
        dep.start()
        assert dep.cache is not None
        specs_all = [dep.resolve_now(f"a{i}").spec for i in range(registered)]
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        for spec in specs_all:
            assert spec is not None
            dep.cache.ensure(spec).result()
        gc.collect()
        rss1 = psutil.Process().memory_info().rss
        results["memory_per_adapter_bytes"] = (rss1 - rss0) / registered
        results["host_tier_bytes_per_adapter"] = dep.cache.host_used / registered
        results["memory_per_adapter_over_file"] = (rss1 - rss0) / registered / file_bytes
        results["memory_all_registered_mb"] = (rss1 - rss0) / 1e6
        results["memory_1000_projected_mb"] = (rss1 - rss0) / registered * 1000 / 1e6
        dep.stop()

        # HTTP end to end and a hot reload under load
        results.update(http_run(repo, config, args))
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def http_run(repo: Repository, config: ServingConfig, args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    import openai
    from tests.servers import free_port

    commit_model(
        repo, "live", Path(repo.root).parent / "lora1", "v1", base="llama@main", branch="live"
    )
    commit_model(
        repo, "live", Path(repo.root).parent / "lora2", "v2", base="llama@main", branch="next"
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(repo.root), "serve", "llama@main",
         "--port", str(port), "--threads", str(args.threads), "--device", args.device,
         "--max-rank", "8", "--adapter", "live@live", "--max-batch", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    out: dict[str, Any] = {}
    try:
        for _ in range(600):
            try:
                openai.OpenAI(base_url=url, api_key="x", max_retries=0).models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.2)
        names, prompts = workload(8)

        async def one(client: openai.AsyncOpenAI, name: str, prompt: list[int]) -> int:
            stream = await client.completions.create(
                model=name, prompt=prompt, max_tokens=NEW, temperature=0, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            count = 0
            async for _chunk in stream:
                count += 1
            return count

        async def burst(names: list[str]) -> float:
            client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
            start = time.perf_counter()
            await asyncio.gather(*(one(client, n, p) for n, p in zip(names, prompts, strict=True)))
            return time.perf_counter() - start

        best = min(asyncio.run(burst(names)) for _ in range(2))
        out["http_tokens_per_s"] = REQUESTS * NEW / best

        failures = 0
        done = 0

        async def reload_under_load() -> None:
            nonlocal failures, done
            client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)

            async def loop() -> None:
                nonlocal failures, done
                for _ in range(20):
                    try:
                        await one(client, "live@live", prompts[0])
                        done += 1
                    except Exception:
                        failures += 1

            mover = asyncio.get_running_loop().run_in_executor(
                None, lambda: (time.sleep(1.0), reset_branch(repo, "live", "live", "next"))
            )
            await asyncio.gather(*(loop() for _ in range(8)), mover)

        asyncio.run(reload_under_load())
        out["hot_reload_requests"] = done
        out["hot_reload_failures"] = failures
    finally:
        process.terminate()
        process.wait(timeout=60)
    return out


def print_table(r: dict[str, Any]) -> None:
    print(f"\n{'approach':<16}{'new tok/s':>11}{'x base':>9}")
    for name, value in r["tokens_per_s"].items():
        print(f"{name:<16}{value:>11.1f}{r['fraction_of_base'][name]:>9.2f}")
    rows = [
        ("throughput at 64 adapters / base", f"{r['fraction_of_base']['ours N=64']:.2f}",
         ">= 0.90"),
        ("throughput at 1 adapter / base", f"{r['fraction_of_base']['ours N=1']:.2f}", ">= 0.95"),
        ("cold load <=1 MB, disk -> slot p50", f"{r['cold_load_disk_ms_p50']:.1f} ms", "<= 10 ms"),
        ("cold load, registry -> slot p50", f"{r['cold_load_registry_ms_p50']:.1f} ms", "(info)"),
        ("64 adapters registry -> servable", f"{r['registry_to_servable_64_s']:.2f} s", "<= 2 s"),
        ("memory per adapter / file size (RSS)", f"{r['memory_per_adapter_over_file']:.2f}",
         "<= 1.1"),
        ("host tier bytes per adapter / file size",
         f"{r['host_tier_bytes_per_adapter'] / r['adapter_file_bytes']:.2f}", "<= 1.1"),
        ("1,000 adapters in memory", f"{r['memory_1000_projected_mb']:.0f} MB", "< 1000 MB"),
        ("fairness: p99 cold / p99 hot wait", f"{r['fairness_ratio_cold_over_hot']:.2f}", "<= 2"),
        ("HTTP / in-process tokens/s (wall)",
         f"{r['http_tokens_per_s'] / r['inprocess_wall_tokens_per_s']:.2f}", ">= 0.9"),
        ("hot reload under load: failures",
         f"{r['hot_reload_failures']} of {r['hot_reload_requests'] + r['hot_reload_failures']}",
         "0"),
    ]  # fmt: skip
    print(f"\n{'figure':<40}{'measured':>14}  bar")
    for name, value, bar in rows:
        print(f"{name:<40}{value:>14}  {bar}")


if __name__ == "__main__":
    main()
