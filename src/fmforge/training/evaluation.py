"""Evaluating a model commit on a dataset split, recorded as ``CommitEvaluated`` on its stream.

``evaluate(repo, "minilm-yt-lora@main", "youtube@v3", split="test", metrics=["accuracy"])``
loads the commit (an adapter on its recorded base, or a full model), scores the split's gold
rows and records the result; ``model show`` and ``model log`` print it per commit, and
``repo.view(ModelEvaluations)`` answers from it. Metrics:

- ``accuracy``: share of gold rows whose most probable class is the gold one;
- ``macro_f1``: F1 per class (over the classes in the gold labels or the predictions),
  averaged without weights, as scikit-learn's ``f1_score(average="macro")``;
- ``perplexity``: exp of the mean next-token negative log-likelihood over every predicted
  token of the split (causal-lm).

The task and class names come from the commit's ``fmforge_task.json`` (written by
``finetune``), else from its ``config.json`` (``...ForSequenceClassification`` and
``id2label``, or ``...ForCausalLM``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import InvalidSpec
from fmforge.models.checkout import CommitReader, open_model
from fmforge.models.events import CommitEvaluated
from fmforge.models.refs import STREAM_PREFIX, ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.training.data import Rows, gold_split
from fmforge.training.modeling import (
    TASK_FILE,
    collate,
    encode,
    load_for_inference,
    token_losses,
)
from fmforge.training.spec import TASK_METRICS

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Evaluation:
    model: str
    commit: str
    dataset: str  # NAME@vN
    dataset_version: str
    split: str | None
    metrics: dict[str, float]
    rows: int
    task: str
    run: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "commit": self.commit, "dataset": self.dataset,
            "dataset_version": self.dataset_version, "split": self.split,
            "metrics": self.metrics, "rows": self.rows, "task": self.task, "run": self.run,
        }  # fmt: skip


def classification_metrics(predicted: Array, gold: Array) -> dict[str, float]:
    accuracy = float(np.mean(predicted == gold)) if len(gold) else math.nan
    scores = []
    for label in np.union1d(gold, predicted):
        tp = int(np.sum((predicted == label) & (gold == label)))
        fp = int(np.sum((predicted == label) & (gold != label)))
        fn = int(np.sum((predicted != label) & (gold == label)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "macro_f1": float(np.mean(scores)) if scores else math.nan}


@torch.no_grad()
def score(
    model: Any,
    tokenizer: Any,
    rows: Rows,
    *,
    task: str,
    metrics: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    device: Any = "cpu",
) -> dict[str, float]:
    """``metrics`` of ``model`` (in memory) on ``rows``; the model's train/eval mode is kept."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        encoded = encode(tokenizer, rows.texts, max_length)
        if task == "causal-lm":
            total = torch.zeros(2, dtype=torch.float64)
            for start in range(0, len(encoded), batch_size):
                batch = collate(tokenizer, encoded[start : start + batch_size], device)
                logits = model(**batch).logits
                total += token_losses(logits, batch).sum(dim=0).double().cpu()
            nll, tokens = float(total[0]), float(total[1])
            return {"perplexity": math.exp(nll / tokens) if tokens else math.nan}
        predicted = []
        for start in range(0, len(encoded), batch_size):
            batch = collate(tokenizer, encoded[start : start + batch_size], device)
            predicted.append(model(**batch).logits.argmax(dim=-1).cpu().numpy())
        found = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
        assert rows.gold is not None
        values = classification_metrics(found, rows.gold)
        return {name: values[name] for name in metrics}
    finally:
        if was_training:
            model.train()


@mediated("use", targets.needs(("use", targets.model("model")), ("use", targets.dataset("data"))))
def evaluate(
    repo: Repository,
    model: str,
    data: str,
    *,
    split: str | None = None,
    metrics: Sequence[str] | None = None,
    task: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    run: str | None = None,
    record: bool = True,
) -> Evaluation:
    """Score commit ``model`` (NAME@REF) on the gold rows of ``data`` (DATASET@REF, ``split``
    or every row) and record ``CommitEvaluated`` on the model's stream (unless ``record`` is
    off). Refused with ``InvalidSpec``, nothing recorded, when the model, task, metric or data
    do not fit together. ``label_column``: default, the one the finetune trained on (its
    ``fmforge_task.json``), else ``label``."""
    name, ref = split_model_ref(model)
    index = repo.view(ModelRefs)
    commit = index.resolve(name, ref)
    info = index.commit(commit)
    target = f"{name}@{commit}"
    adapter = CommitReader(repo, target).manifest.get("adapter")
    directory = open_model(target, repo=repo)
    task_info = task_of(directory, target)
    if task is not None and task != task_info["task"]:
        raise InvalidSpec(f"{name}@{commit[:12]} is a {task_info['task']} model, not {task}")
    task = str(task_info["task"])
    chosen = list(metrics or TASK_METRICS[task][:1])
    for metric in chosen:
        if metric not in TASK_METRICS[task]:
            raise InvalidSpec(
                f"--metric {metric} does not apply to {task} (use {', '.join(TASK_METRICS[task])})"
            )
    base_dir = None
    if adapter is not None:
        trained_on = task_info.get("base")
        if not info.base:
            raise InvalidSpec(f"{name}@{commit[:12]} is an adapter with no recorded base model")
        if trained_on and trained_on != info.base:
            raise InvalidSpec(
                f"{name}@{commit[:12]} is an adapter trained on {_short(trained_on)}, but is "
                f"committed as adapting {_short(info.base)}"
            )
        base_dir = open_model(info.base, repo=repo)
    version, rows = gold_split(
        repo, data, split, task=task, text_column=text_column or task_info["text_column"],
        label_column=label_column or task_info.get("label_column") or "label",
        classes=task_info.get("classes"),
    )  # fmt: skip
    if not len(rows):
        where = f"split {split!r} of " if split else ""
        raise InvalidSpec(f"no rows of {where}{version.ref} to evaluate on")
    loaded, tokenizer = load_for_inference(directory, task_info, base_dir)
    values = score(
        loaded, tokenizer, rows, task=task, metrics=chosen, batch_size=batch_size,
        max_length=max_length or int(task_info.get("max_length") or 512),
    )  # fmt: skip
    result = Evaluation(name, commit, version.ref, version.id, split, values, len(rows), task, run)
    if record:
        record_evaluation(repo, result)
    return result


def record_evaluation(repo: Repository, evaluation: Evaluation) -> None:
    """Record ``CommitEvaluated`` for ``evaluation`` on its model's stream."""
    data = {
        "model": evaluation.model, "commit": evaluation.commit, "dataset": evaluation.dataset,
        "dataset_version": evaluation.dataset_version, "split": evaluation.split,
        "metrics": {k: _json_number(v) for k, v in evaluation.metrics.items()},
        "rows": evaluation.rows, "run": evaluation.run, "task": evaluation.task,
    }  # fmt: skip
    repo.record(STREAM_PREFIX + evaluation.model, CommitEvaluated(data))  # type: ignore[arg-type]


def task_of(directory: Path, target: str) -> dict[str, Any]:
    """What a committed model directory is for: its ``fmforge_task.json``, else its config."""
    path = directory / TASK_FILE
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InvalidSpec(f"{target}: {TASK_FILE} is not valid JSON") from None
        if isinstance(info, dict) and info.get("task") in TASK_METRICS:
            info.setdefault("text_column", "text")
            return info
        raise InvalidSpec(f"{target}: {TASK_FILE} names no known task")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = config.get("id2label") or {}
        classes = [str(labels[k]) for k in sorted(labels, key=int)] if labels else None
        return {"task": "classification", "classes": classes, "text_column": "text"}
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return {"task": "causal-lm", "classes": None, "text_column": "text"}
    kind = ", ".join(architectures) or "no architecture in config.json"
    raise InvalidSpec(
        f"{target} has no classification or language-model head ({kind}): evaluate a finetune of it"
    )


def _short(ref: str) -> str:
    name, _, commit = ref.partition("@")
    return f"{name}@{commit[:12]}"


def _json_number(value: float) -> float | str:
    if math.isfinite(value):
        return float(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
