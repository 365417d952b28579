"""The serving chapter of ``fmforge demo``: two ``fmforge serve`` replicas, the ``openai`` client.

- **MiniLM with classification adapters.** The finetuning chapter's adapters when it ran
  (``facts["minilm_adapters"]``: ``{"model", "branch", "task"}`` each); otherwise two trained
  here with ``fmforge.training`` for a few steps on 50 of the shipped comments (spam or ham,
  and which of the five videos a comment was left on).
- **A tiny causal LM with two adapters.** A random Llama built from a config (no download),
  with a byte-level BPE tokenizer trained on the comments, and two PEFT LoRA adapters with
  random factors (what they say is noise; which version said it is the point). The first is
  served from its branch ``live``.

Each replica is a ``Deployment`` behind the OpenAI-compatible app on uvicorn, in this process,
on a free local port. The ``openai`` client sends mixed requests to both (classifications,
embeddings, completions, streamed chat); then, while streamed completions run against
``tiny-lora-a@live``, a new version is committed onto ``live``, and the answers show the move
reaching new requests with none failing. Last, each replica's Prometheus metrics, and its stop.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fmforge.errors import ServingError
from fmforge.models import commit_model
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository
from fmforge.serving.views import DeploymentsView

LLM = "tiny-llama"
LLM_ADAPTERS = ("tiny-lora-a", "tiny-lora-b")
MOVED = f"{LLM_ADAPTERS[0]}@live"
VIDEOS = ("Psy", "KatyPerry", "LMFAO", "Eminem", "Shakira")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _comments() -> list[dict[str, Any]]:
    path = resources.files("fmforge").joinpath("demo_data/youtube_spam_collection.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- preparing what is served -----------------------------------------------------------------


def prepare_adapters(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """The MiniLM classification adapters (the finetuning chapter's, else trained here) and
    the tiny Llama with two adapters, all committed."""
    if facts.get("minilm") is None:
        return ["skipped (no MiniLM)"]
    try:
        import openai  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return [f"skipped: {exc.name} is missing (`make demo` installs it)"]
    lines: list[str] = []
    if not facts.get("minilm_adapters"):
        lines += _train_classifiers(repo, scratch / "serve-comments.jsonl", facts)
    refs = repo.view(ModelRefs)
    for entry in facts["minilm_adapters"]:
        commit = refs.resolve(entry["model"], entry["branch"])
        lines.append(
            f"classifier {entry['model']}@{entry['branch']} ({entry['task']}): {commit[:12]}"
        )
    lines += _commit_tiny_llama(repo, scratch / "tiny-llama", facts)
    return lines


def _train_classifiers(repo: Repository, data: Path, facts: dict[str, Any]) -> list[str]:
    """Two LoRA classifiers of MiniLM, a few steps each: a stand-in for the finetuning
    chapter's, so this chapter runs on its own."""
    from fmforge.data.versions import add_dataset
    from fmforge.training import FinetuneSpec, finetune

    picked: list[dict[str, Any]] = []
    for video in VIDEOS:
        rows = [r for r in _comments() if r["video"] == video and r["split"] == "train"]
        picked += rows[:10]
    with data.open("w", encoding="utf-8") as out:
        for row in picked:
            spam = "spam" if row["label"] == 1 else "ham"
            record = {"text": row["text"], "spam": spam, "video": row["video"], "split": "train"}
            out.write(json.dumps(record) + "\n")
    version = add_dataset(repo, "serve-comments", data, message="50 comments, 10 per video")
    lines = [
        f"no adapters from the finetuning chapter: training two on {version.version.ref} "
        "(12 steps each: stand-ins, not good classifiers)"
    ]
    adapters = []
    for task, column, labels in (("spam", "spam", ("ham", "spam")), ("video", "video", VIDEOS)):
        spec = FinetuneSpec.parse({
            "base": "minilm@main", "data": version.version.ref, "label_column": column,
            "labels": labels, "r": 4, "alpha": 8, "max_steps": 12, "batch_size": 16,
            "max_length": 32, "lr": 3e-3, "threads": 1, "output": f"minilm-{task}@main",
            "project": "demo-serving",
        })  # fmt: skip
        result = finetune(repo, spec, resume=None, name=f"serve-{task}")
        adapters.append({"model": f"minilm-{task}", "branch": "main", "task": task})
        lines.append(f"  {task}: run {result.run_name}, {result.steps} steps -> {result.model}")
    facts["minilm_adapters"] = adapters
    return lines


def _write_tokenizer(directory: Path) -> None:
    from tokenizers import (  # type: ignore[import-untyped]
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator([r["text"] for r in _comments()[:400]], trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def _write_llama(directory: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _write_tokenizer(directory)
    config = LlamaConfig(  # type: ignore[no-untyped-call]
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    with torch.no_grad():  # a spread of logits, so each adapter's greedy choices show
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)


def _write_lora(base: Path, out: Path, seed: int) -> None:
    """A PEFT LoRA adapter of the Llama at ``base`` with random non-zero factors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(str(out))


def _commit_tiny_llama(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    base = scratch / "base"
    _write_llama(base)
    result = commit_model(repo, LLM, base, "a random 2-layer Llama from a config")
    lines = [f"{LLM}@main {result.commit[:12]}: {result.tensors} tensors, random weights"]
    for i, (name, branch) in enumerate(zip(LLM_ADAPTERS, ("live", "main"), strict=True)):
        _write_lora(base, scratch / name, seed=i + 1)
        done = commit_model(
            repo, name, scratch / name, "v1", branch=branch, base=f"{LLM}@main", orphan=True
        )
        lines.append(f"adapter {name}@{branch} {done.commit[:12]} (LoRA r=4 on q,v,o)")
    _write_lora(base, scratch / "v2", seed=7)  # committed onto `live` while it serves
    facts["serving"] = {"v2": scratch / "v2"}
    return lines


# ---- serving ----------------------------------------------------------------------------------


@contextmanager
def _serving(root: Path, base: str, adapters: list[str]) -> Iterator[tuple[str, Any]]:
    """``fmforge serve BASE --adapter ...`` in this process, on a free port; yields its URL
    and the deployment, and stops both when the block ends."""
    import uvicorn

    from fmforge.serving.api import create_serving_app
    from fmforge.serving.deployment import Deployment, ServingConfig

    deployment = Deployment(
        root, base, adapters, ServingConfig(max_batch=16, flush_s=0.2, threads=1)
    )
    deployment.start()
    try:
        app = create_serving_app(deployment, bind_host="127.0.0.1", manage=False)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="demo-uvicorn", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
            raise ServingError(f"the demo's server of {base} did not start")
        try:
            yield f"http://127.0.0.1:{port}", deployment
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
    finally:
        deployment.stop()


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="demo", max_retries=0, timeout=60)


@dataclass
class _Tally:
    answered: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.answered[kind] += 1

    def fail(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.failed.append(f"{what}: {type(exc).__name__}: {exc}")


def serve_and_move(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """Both replicas up; mixed requests through ``openai``; ``live`` moved mid-stream; the
    metrics; both stopped."""
    if "serving" not in facts:
        return ["skipped (nothing prepared)"]
    from fmforge.serving.adapters import describe

    refs = repo.view(ModelRefs)
    bases = [
        describe(repo, a["model"], refs.resolve(a["model"], a["branch"])).base or "minilm@main"
        for a in facts["minilm_adapters"]
    ]
    minilm = bases[0]  # the base commit the (first) adapters were trained on: one deployment
    entries = [a for a, b in zip(facts["minilm_adapters"], bases, strict=True) if b == minilm]
    classifiers = [f"{a['model']}@{a['branch']}" for a in entries]
    shown = minilm[: minilm.index("@") + 13]
    lines = [
        f"not served: {a['model']}@{a['branch']} (adapts {b[: b.index('@') + 13]}, not {shown})"
        for a, b in zip(facts["minilm_adapters"], bases, strict=True)
        if b != minilm
    ]
    tally = _Tally()
    metrics: dict[str, str] = {}
    with (
        _serving(repo.root, minilm, list(dict.fromkeys(classifiers))) as (enc_url, enc),
        _serving(repo.root, f"{LLM}@main", [MOVED, f"{LLM_ADAPTERS[1]}@main"]) as (llm_url, llm),
    ):
        lines.append(
            f"serving {shown} + {len(classifiers)} classifiers on {enc_url}/v1 and "
            f"{LLM}@main + 2 adapters on {llm_url}/v1 (deployments {enc.name}, {llm.name})"
        )
        lines += _mixed(enc_url, llm_url, entries, tally)
        lines += _move(repo, llm_url, facts["serving"]["v2"], tally)
        for url, dep in ((enc_url, enc), (llm_url, llm)):
            metrics[dep.name] = _fetch_text(url + "/metrics")
    total = sum(tally.answered.values())
    lines.append(
        f"{total} requests through the openai client: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(tally.answered.items()))
        + f"; {len(tally.failed)} failed"
    )
    lines += [f"  FAILED {f}" for f in tally.failed[:3]]
    for name, text in metrics.items():
        lines += _summarise_metrics(name, text)
    lines += _ledger_lines(repo, list(metrics))
    return lines


def _fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def _mixed(
    enc_url: str, llm_url: str, classifiers: list[dict[str, Any]], tally: _Tally
) -> list[str]:
    """Classifications (every comment by every classifier), embeddings, completions and
    streamed chats, shuffled, eight clients at a time."""
    rng = random.Random(0)
    unseen = [r for r in _comments() if r["split"] == "test"]  # none trained on
    spam = [r for r in unseen if r["label"] == 1]
    ham = [r for r in unseen if r["label"] == 0]
    comments = [*rng.sample(spam, 6), *rng.sample(ham, 6)]
    texts = [str(r["text"])[:160] for r in comments]
    labels: dict[tuple[int, int], tuple[str, float]] = {}  # (classifier, comment)
    said: dict[str, set[str]] = {}

    def classify(task: int, i: int) -> None:
        entry = classifiers[task]
        body = {"model": f"{entry['model']}@{entry['branch']}", "input": [texts[i]]}
        answer = _client(enc_url).post("/classify", body=body, cast_to=object)
        row = answer["data"][0]
        labels[(task, i)] = (str(row["label"]), max(row["probs"]))
        tally.ok("classifications")

    def embed(_: int, i: int) -> None:
        _client(enc_url).embeddings.create(model="minilm", input=texts[i : i + 2])
        tally.ok("embeddings")

    def complete(which: int, i: int) -> None:
        model = (LLM, MOVED, LLM_ADAPTERS[1])[which]
        answer = _client(llm_url).completions.create(
            model=model, prompt="check out my channel", max_tokens=8, temperature=0
        )
        said.setdefault(model, set()).add(answer.choices[0].text)
        tally.ok("completions")

    def chat(_: int, i: int) -> None:
        stream = _client(llm_url).chat.completions.create(
            model=LLM_ADAPTERS[1], messages=[{"role": "user", "content": texts[i][:40]}],
            max_tokens=8, temperature=0, stream=True,
        )  # fmt: skip
        for _chunk in stream:
            pass
        tally.ok("streamed chats")

    jobs: list[tuple[Any, int, int]] = [
        (classify, task, i) for task in range(len(classifiers)) for i in range(len(texts))
    ]
    jobs += [(embed, 0, i) for i in range(0, 12, 2)]
    jobs += [(complete, i % 3, i) for i in range(12)]
    jobs += [(chat, 0, i) for i in range(6)]
    rng.shuffle(jobs)

    def run(job: tuple[Any, int, int]) -> None:
        fn, which, i = job
        try:
            fn(which, i)
        except Exception as exc:  # counted and shown, never hidden
            tally.fail(f"{fn.__name__} {which} {i}", exc)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, jobs))
    lines = [f"{len(jobs)} mixed requests, shuffled, 8 clients at a time: "
             f"{time.perf_counter() - started:.1f} s"]  # fmt: skip
    tasks = [str(entry["task"]) for entry in classifiers]
    if len(set(tasks)) < len(tasks):  # the same task twice: name the models
        tasks = [str(entry["model"]) for entry in classifiers]
    for i in (0, 1, 6):  # two spam comments and a ham one
        verdicts = ", ".join(
            f"{tasks[c]} {labels[(c, i)][0]} ({labels[(c, i)][1]:.2f})"
            for c in range(len(classifiers))
            if (c, i) in labels
        )
        truth = f"{'spam' if comments[i]['label'] else 'ham'}, {comments[i]['video']}"
        lines.append(f"  {texts[i][:44]!r:<48} -> {verdicts or '-'}  (truth: {truth})")
    distinct = {text for answers in said.values() for text in answers}
    lines.append(
        f"  one prompt, greedy, to {', '.join(sorted(said))}: {len(distinct)} different texts "
        "(random weights: the words are noise; each answer is the same across its requests)"
        if all(len(v) == 1 for v in said.values())
        else f"  one prompt, greedy: {sum(map(len, said.values()))} texts from {len(said)} models"
    )
    return lines


def _move(repo: Repository, url: str, v2: Path, tally: _Tally) -> list[str]:
    """Streamed completions against ``tiny-lora-a@live`` from four clients while a new
    version is committed onto ``live``."""
    model, branch = MOVED.split("@")
    old = repo.view(ModelRefs).resolve(model, branch)
    seen: list[tuple[float, float, str]] = []  # (request start, end, fingerprint)
    stop = threading.Event()

    def load() -> None:
        api = _client(url)
        while not stop.is_set():
            started = time.monotonic()
            try:
                stream = api.completions.create(
                    model=MOVED, prompt="check out my channel", max_tokens=6, temperature=0,
                    stream=True,
                )  # fmt: skip
                chunks = list(stream)
                with tally.lock:
                    seen.append((started, time.monotonic(), chunks[-1].system_fingerprint or ""))
                tally.ok("streamed completions")
            except Exception as exc:  # counted and shown, never hidden
                tally.fail("streamed completion", exc)

    workers = [threading.Thread(target=load, name=f"demo-client-{i}") for i in range(4)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 12 and time.monotonic() < deadline and not tally.failed:
            time.sleep(0.05)
        moved_at = time.monotonic()
        new = commit_model(repo, model, v2, "v2", branch=branch).commit
        committed = time.monotonic()
        deadline = committed + 20
        while time.monotonic() < deadline and not tally.failed:
            with tally.lock:
                after = [f for s, _, f in seen if s > committed]
            if len(after) >= 8 and set(after[-8:]) == {f"fmforge-{new[:12]}"}:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    v1_print, v2_print = f"fmforge-{old[:12]}", f"fmforge-{new[:12]}"
    before = [f for s, _, f in seen if s < moved_at]
    later = sorted((s, f) for s, _, f in seen if s > committed)
    first = next((i for i, (_, f) in enumerate(later) if f == v2_print), len(later))
    first_ms = min((1000 * (e - committed) for s, e, f in seen if f == v2_print), default=None)
    stale = sum(1 for _, f in later[first:] if f != v2_print)
    return [
        f"committed v2 of {model} onto {branch} ({old[:12]} -> {new[:12]}) in "
        f"{1000 * (committed - moved_at):.0f} ms while 4 clients streamed from {MOVED}:",
        f"  {len(before)} requests started before the move: "
        f"{sum(f == v1_print for f in before)} answered by v1",
        f"  {len(later)} started after it: "
        + (
            f"the first {first} by v1 (resolved before the replica saw the move), then "
            if first
            else ""
        )
        + f"{len(later) - first - stale} by v2"
        + (f" and {stale} by v1" if stale else ""),
        "  first answer by v2 "
        + ("never" if first_ms is None else f"{first_ms:.0f} ms after the commit")
        + f"; every answer names its version (system_fingerprint {v2_print})",
    ]


_SAMPLE = re.compile(r"^fmforge_serving_(\w+?)(?:\{(.*)\})? (\S+)$")


_SUMMED = (
    "batch_size_sum", "batch_size_count", "queue_seconds_sum", "queue_seconds_count",
    "generated_tokens_total", "prompt_tokens_total", "adapter_loads_total",
)  # fmt: skip


def _summarise_metrics(name: str, text: str) -> list[str]:
    """A few lines of a replica's ``/metrics`` (Prometheus text)."""
    requests: Counter[str] = Counter()
    sums: dict[str, float] = dict.fromkeys(_SUMMED, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        metric, labels, value = match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])
        if metric == "requests_total":
            model, _, ref = labels.get("model", "").partition("@")
            requests[f"{model}@{ref[:12]}" if ref else model] += int(value)
        elif metric in sums:
            sums[metric] += value
    passes = sums["batch_size_count"]
    return [
        f"/metrics of {name}: requests "
        + ", ".join(f"{key} {n}" for key, n in sorted(requests.items())),
        f"  {int(sums['prompt_tokens_total'])} prompt and "
        f"{int(sums['generated_tokens_total'])} generated tokens in {int(passes)} forward "
        f"passes ({sums['batch_size_sum'] / max(passes, 1):.1f} rows each); "
        f"{int(sums['adapter_loads_total'])} adapter loads; mean queue wait "
        f"{1000 * sums['queue_seconds_sum'] / max(sums['queue_seconds_count'], 1):.0f} ms",
    ]


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _ledger_lines(repo: Repository, deployments: list[str]) -> list[str]:
    """What the ledger says of each deployment, read through its view."""
    index = repo.view(DeploymentsView)
    lines = []
    for name in deployments:
        replicas = index.replicas(name)
        stopped = sum(1 for r in replicas if not r.running)
        requests = sum(r.requests or 0 for r in replicas)
        tokens = sum(r.generated_tokens or 0 for r in replicas)
        lines.append(
            f"stopped; deployment/{name} in the ledger: {len(replicas)} replica(s) started, "
            f"{stopped} stopped, {requests} requests and {tokens} generated tokens recorded"
        )
    return lines
