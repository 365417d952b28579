"""A merge scored on each of its inputs' tasks, and ``--auto``: λ (and density) chosen on the
inputs' dev splits.

A merge of classification finetunes is one body and several task heads: the heads are not
merged (each input's classifier is its own; an adapter's ``modules_to_save`` head, or a full
task model's tensors the bare base lacks). A task here is one input: its finetune gives the
head, the class names and the tokenizer, and the merged body replaces the finetune's body
tensor by tensor (``bert.encoder...`` over the merge's ``encoder...``). Its dev data is the
split the finetune was evaluated on (its first recorded ``CommitEvaluated`` that is not a
``test`` split, as ``finetune`` records its eval split first), or one given per input; the
gold labels are read from the column the finetune trained on.

``auto_merge`` runs ``fmforge.merging.auto.search`` with this scorer over the merges
``merged_tensors`` builds in memory, commits the best spec, and records the search's summary
(each task's score as a share of its single-task finetune's, and the share of the gain over
λ = 0 kept) in the merge commit's provenance under ``auto``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fmforge.errors import InvalidMerge, InvalidSpec
from fmforge.merging.adapters import base_name
from fmforge.merging.auto import DENSITIES, LAMBDAS, AutoResult, search
from fmforge.merging.base import MergeResult, MergeSpec
from fmforge.merging.planning import merged_tensors, run_merge
from fmforge.merging.registry import get_method
from fmforge.models import CommitReader, load_state_dict, open_model
from fmforge.models.evaluations import ModelEvaluations
from fmforge.repository import Repository


@dataclass(frozen=True)
class Task:
    """One input's task: its finetune (``NAME@COMMIT``) and the data it is scored on."""

    name: str  # the input as given
    finetune: str
    data: str | None  # DATASET@REF (None: rows given to the scorer)
    split: str | None = None
    metric: str = "accuracy"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "finetune": self.finetune, "data": self.data,
                "split": self.split, "metric": self.metric}  # fmt: skip


def tasks_of(repo: Repository, spec: MergeSpec, dev: Mapping[str, str] | None = None) -> list[Task]:
    """Each input's task: data and split from ``dev`` (input as given -> ``DATASET@REF[:SPLIT]``),
    else its finetune's recorded evaluation on a split other than ``test``."""
    dev = dict(dev or {})
    unknown = sorted(set(dev) - {i.model for i in spec.inputs})
    if unknown:
        raise InvalidMerge(f"--dev {unknown[0]}: not an input of the merge")
    tasks = []
    for item in spec.inputs:
        reader = CommitReader(repo, item.model)
        target = f"{reader.model}@{reader.commit}"
        if item.model in dev:
            data, _, split = dev[item.model].partition(":")
            tasks.append(Task(item.model, target, data, split or None))
            continue
        found = [
            r for r in repo.view(ModelEvaluations).of_commit(reader.commit)
            if r.split != "test" and r.task == "classification"
        ]  # fmt: skip
        if not found:
            raise InvalidMerge(
                f"{item.model} has no recorded classification evaluation to choose λ on: "
                f"give --dev {item.model}=DATASET@REF:SPLIT"
            )
        record = found[0]
        metric = "accuracy" if "accuracy" in record.metrics else sorted(record.metrics)[0]
        tasks.append(Task(item.model, target, record.dataset, record.split, metric))
    return tasks


class TaskScorer:
    """Each task's finetune loaded once (an adapter merged into its base), its rows read once;
    ``score(tensors)`` puts a merged body under every head and scores it. ``rows``: a task's
    gold rows given (task name -> ``fmforge.training.data.Rows``), as a repository that holds
    no data (a clone that pulled only models) scores a merge on a test set of its own."""

    def __init__(
        self, repo: Repository, tasks: Sequence[Task], rows: Mapping[str, Any] | None = None
    ) -> None:
        from fmforge.training.data import gold_split
        from fmforge.training.evaluation import task_of
        from fmforge.training.modeling import load_for_inference

        if not tasks:
            raise InvalidMerge("no task to score the merge on")
        self.tasks = list(tasks)
        self.loaded: list[tuple[Any, Any, Any, dict[str, Any]]] = []
        for task in self.tasks:
            reader = CommitReader(repo, task.finetune)
            target = f"{reader.model}@{reader.commit}"
            directory = open_model(target, repo=repo)
            info = task_of(directory, target)
            if info["task"] != "classification":
                raise InvalidMerge(f"{task.name}: only classification finetunes are scored")
            adapts = reader.info.base
            base_dir = open_model(adapts, repo=repo) if adapts else None
            model, tokenizer = load_for_inference(directory, info, base_dir)
            if base_dir is not None:
                model = model.merge_and_unload()
            model.eval()
            given = (rows or {}).get(task.name)
            if given is None:
                if task.data is None:
                    raise InvalidMerge(f"{task.name}: no data to score it on")
                try:
                    _version, given = gold_split(
                        repo, task.data, task.split, task="classification",
                        text_column=info.get("text_column") or "text",
                        label_column=info.get("label_column") or "label",
                        classes=info.get("classes"),
                    )  # fmt: skip
                except InvalidSpec as exc:
                    raise InvalidMerge(f"{task.name}: {exc}") from None
            if not len(given):
                raise InvalidMerge(f"{task.name}: no gold rows in {task.data}:{task.split}")
            self.loaded.append((model, tokenizer, given, info))

    def single(self) -> dict[str, float]:
        """Each finetune's own score on its task."""
        return {t.name: self._score(i) for i, t in enumerate(self.tasks)}

    def score(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Every task's score of the merged body ``tensors`` (base tensor names)."""
        specs = {name: None for name in tensors}
        out = {}
        for i, task in enumerate(self.tasks):
            model = self.loaded[i][0]
            state = model.state_dict()
            covered = set()
            with torch.no_grad():
                for key, value in state.items():
                    target = base_name(key, specs)  # type: ignore[arg-type]
                    if target is not None and target in tensors:
                        value.copy_(tensors[target].reshape(value.shape).to(value.dtype))
                        covered.add(target)
            missing = sorted(n for n in set(tensors) - covered if tensors[n].is_floating_point())[
                :3
            ]  # an integer buffer the model rebuilds itself (position_ids) is no weight
            if missing:
                raise InvalidMerge(f"{task.name}: its model has no tensor {', '.join(missing)}")
            out[task.name] = self._score(i)
        return out

    def _score(self, i: int) -> float:
        from fmforge.training.evaluation import score

        model, tokenizer, rows, info = self.loaded[i]
        task = self.tasks[i]
        values = score(
            model, tokenizer, rows, task="classification", metrics=[task.metric],
            max_length=int(info.get("max_length") or 128),
        )  # fmt: skip
        return float(values[task.metric])


def evaluate_merge(
    repo: Repository,
    target: str,
    tasks: Sequence[Task],
    rows: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """The committed merge ``target`` (a full model) scored on each task under its head."""
    with load_state_dict(target, repo=repo) as state:
        tensors = {name: state[name] for name in state}
    return TaskScorer(repo, tasks, rows).score(tensors)


def auto_merge(
    repo: Repository,
    spec: MergeSpec,
    *,
    dev: Mapping[str, str] | None = None,
    lambdas: Sequence[float] = LAMBDAS,
    densities: Sequence[float] = DENSITIES,
    name: str | None = None,
    branch: str | None = None,
    message: str | None = None,
) -> tuple[MergeResult, AutoResult]:
    """Choose λ (and the density, for TIES and DARE) by the mean score on the inputs' dev
    splits, then commit the best merge with the search's summary in its provenance."""
    if spec.output != "full":
        raise InvalidMerge("--auto scores full merges: drop --as-adapter")
    method = get_method(spec.method)
    if "lambda" not in method.parameters:
        raise InvalidMerge(f"--auto chooses λ, and method {method.name} has none")
    tasks = tasks_of(repo, spec, dev)
    scorer = TaskScorer(repo, tasks)
    found = search(
        spec, lambda s: scorer.score(merged_tensors(repo, s)), scorer.single(),
        lambdas=lambdas, densities=densities,
    )  # fmt: skip
    summary = dict(found.summary(), tasks=[t.to_json() for t in tasks])
    result = run_merge(
        repo, found.best.spec, name=name, branch=branch, message=message,
        extra={"auto": summary},
    )  # fmt: skip
    return result, found
