"""What a finetune records: the run's config, its metrics and checkpoints as it trains (the
loop's sink), the result commit and its evaluations, and what ``finetune`` returns."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmforge.errors import InvalidSpec
from fmforge.models import commit_model
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository
from fmforge.tracking import Run
from fmforge.training import resume as resuming
from fmforge.training.evaluation import Evaluation, record_evaluation, score
from fmforge.training.loop import Loop, Position, World
from fmforge.training.masks import masks_summary
from fmforge.training.modeling import Job, lora_targets, save_model
from fmforge.training.spec import TASK_METRICS

RESULT_TAG = "fmforge.result"


@dataclass(frozen=True)
class Progress:
    """What a callback sees after each evaluation."""

    run: str
    step: int
    epoch: float
    metrics: dict[str, float]
    objective: float | None  # eval_<spec.objective>
    steps_planned: int  # the steps the whole finetune takes (epochs, or max_steps)


Callback = Callable[[Progress], bool | None]


@dataclass(frozen=True)
class FinetuneResult:
    run: str
    run_name: str
    model: str | None  # where the result was committed (None: stopped by the callback)
    commit: str | None
    branch: str | None
    adapter: bool
    base: str  # NAME@COMMIT trained from
    steps: int
    checkpoints: tuple[tuple[int, str], ...]  # (step, commit) on runs/<run id> of the base
    evaluations: tuple[Evaluation, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)  # eval_accuracy, test_macro_f1...
    stopped: bool = False
    interrupted: bool = False  # stopped by a wall-time budget (``deadline``)
    resumed_from: dict[str, Any] | None = None
    trained: Any = field(default=None, repr=False, compare=False)
    """The trained model in memory (rank 0; the PEFT model for an adapter), in eval mode."""

    @property
    def commit_ref(self) -> str:
        """``NAME@COMMIT`` of the result."""
        if self.commit is None:
            raise InvalidSpec(f"run {self.run_name} was stopped: it committed no result")
        return f"{self.model}@{self.commit}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "run_name": self.run_name, "model": self.model,
            "commit": self.commit, "branch": self.branch, "adapter": self.adapter,
            "base": self.base, "steps": self.steps,
            "checkpoints": [list(c) for c in self.checkpoints],
            "evaluations": [e.to_json() for e in self.evaluations], "metrics": self.metrics,
            "stopped": self.stopped, "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
        }  # fmt: skip


def run_config(
    job: Job,
    loop: Loop,
    world: World,
    point: resuming.Checkpoint | None,
    masks: str | None,
    fisher: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import peft
    import transformers

    spec = job.spec
    trainable = sum(p.numel() for _, p in loop.params)
    return {
        "finetune": spec.model_dump(mode="json"), "spec_digest": spec.digest(),
        "base": {"model": job.base_model, "commit": job.base_commit},
        "data": job.data.record(), "classes": list(job.classes) if job.classes else None,
        "lora_targets": lora_targets(loop.module) if spec.method == "lora" else None,
        "head": list(loop.head), "trainable_parameters": trainable,
        "steps_planned": loop.total,
        "mask": _mask_record(loop, masks, fisher),
        "process": {"host": socket.gethostname(), "pid": os.getpid(), "nproc": world.size},
        "resumed_from": point.record() if point else None,
        "software": {"torch": str(torch.__version__), "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "deterministic": True,
    }  # fmt: skip


def _mask_record(loop: Loop, source: str | None, fisher: dict[str, Any] | None) -> Any:
    if not loop.masks:
        return None
    record = {**masks_summary(loop.masks), "source": source, "keep": loop.spec.keep}
    if fisher is not None:
        record["fisher"] = fisher
    return record


class Silent:
    """Ranks other than 0 report nothing."""

    evaluates = True
    stopped = False

    def logged(self, step: int, values: dict[str, float]) -> None:
        pass

    def evaluated(self, position: Position, metrics: dict[str, float]) -> bool:
        return False

    def checkpoint(self, position: Position, write: Callable[[Path], None]) -> None:
        pass


@dataclass
class RunSink:
    repo: Repository
    run: Run
    job: Job
    callback: Callback | None
    point: resuming.Checkpoint | None
    per_epoch: int
    steps_planned: int
    evaluates: bool = True
    pruned: bool = False
    deadline: float | None = None  # time.monotonic() past which the loop stops (a budget)
    interrupted: bool = False  # stopped by the deadline
    result_masks: bool = True  # whether the result commit holds the trainable mask
    checkpoints: list[tuple[int, str]] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        if not self.interrupted and self.deadline is not None:
            self.interrupted = time.monotonic() >= self.deadline
        return self.interrupted

    def logged(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def evaluated(self, position: Position, metrics: dict[str, float]) -> bool:
        self.run.log(metrics, step=position.step)
        if self.callback is None:
            return False
        objective = metrics.get(f"eval_{self.job.spec.objective}")
        epoch = position.step / max(1, self.per_epoch)
        progress = Progress(
            self.run.id, position.step, epoch, dict(metrics), objective, self.steps_planned
        )
        self.pruned = bool(self.callback(progress))
        return self.pruned

    def checkpoint(self, position: Position, write: Callable[[Path], None]) -> None:
        first = not self.checkpoints and self.point is not None
        with tempfile.TemporaryDirectory(prefix="fmforge-checkpoint-") as tmp:
            write(Path(tmp))
            commit = self.run.log_checkpoint(
                tmp, model=self.job.base_model, step=position.step,
                message=f"{self.run.name} checkpoint at step {position.step}",
                parents=[self.point.commit] if first and self.point else None,
                base=self.job.base if self.job.spec.method == "lora" else None,
            )  # fmt: skip
        self.checkpoints.append((position.step, commit))


def finish(
    repo: Repository,
    run: Run,
    job: Job,
    loop: Loop,
    sink: RunSink,
    position: Position,
    output: tuple[str, str | None],
    point: resuming.Checkpoint | None,
) -> FinetuneResult:
    spec = job.spec
    adapter = spec.method == "lora"
    loop.module.eval()
    common = {
        "trained": loop.module, "run": run.id, "run_name": run.name, "adapter": adapter,
        "base": job.base,
        "steps": position.step, "checkpoints": tuple(sink.checkpoints),
        "resumed_from": point.record() if point else None,
    }  # fmt: skip
    if sink.pruned:
        run.set_tags({"fmforge.stopped": f"by the callback at step {position.step}"})
        return FinetuneResult(model=None, commit=None, branch=None, stopped=True, **common)
    if sink.interrupted and position.step < loop.total:
        run.set_tags({"fmforge.stopped": f"by its wall-time budget at step {position.step}"})
        return FinetuneResult(
            model=None, commit=None, branch=None, stopped=True, interrupted=True, **common
        )
    model, branch = output
    branch = branch or f"finetune/{run.name}"
    parents = None
    index = repo.view(ModelRefs)
    if model == job.base_model and branch not in index.branches(model):
        parents = [job.base_commit]
    provenance = {
        "run": run.id, "base": job.base, "data": job.data.version.id, "method": spec.method,
        "spec_digest": spec.digest(), "step": position.step,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fmforge-result-") as tmp:
        save_model(loop.module, job, Path(tmp), loop.masks if sink.result_masks else None)
        message = f"finetune {spec.method} of {job.base_model} on {job.data.version.ref}"
        committed = commit_model(
            repo, model, tmp, message, branch=branch, parents=parents,
            base=job.base if adapter else None, provenance=provenance,
        )  # fmt: skip
    run.set_tags({RESULT_TAG: f"{model}@{committed.commit}"})
    evaluations, metrics = [], {}
    for kind, rows in (("eval", job.data.eval), ("test", job.data.test)):
        if rows is None:
            continue
        if kind == "eval" and loop.last_eval and loop.last_eval[0] == position.step:
            values = {k.removeprefix("eval_"): v for k, v in loop.last_eval[1].items()}
        else:
            values = score(
                loop.module, job.tokenizer, rows, task=spec.task,
                metrics=TASK_METRICS[spec.task], batch_size=max(spec.batch_size, 32),
                max_length=job.max_length, device=loop.device,
            )  # fmt: skip
            run.log({f"{kind}_{k}": v for k, v in values.items()}, step=position.step)
        evaluation = Evaluation(
            model, committed.commit, job.data.version.ref, job.data.version.id, rows.split,
            values, len(rows), spec.task, run.id,
        )  # fmt: skip
        record_evaluation(repo, evaluation)
        run.log_eval(values, step=position.step, dataset=f"{job.data.version.ref}:{rows.split}")
        evaluations.append(evaluation)
        metrics.update({f"{kind}_{k}": v for k, v in values.items()})
    return FinetuneResult(
        model=model,
        commit=committed.commit,
        branch=branch,
        evaluations=tuple(evaluations),
        metrics=metrics,
        **common,
    )
