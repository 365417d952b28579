"""A ``transformers`` ``TrainerCallback`` that records the Trainer's run into fmforge.

    from fmforge.integrations import FmforgeCallback
    trainer = Trainer(..., callbacks=[FmforgeCallback("sentiment", base_model="minilm@main")])

The run starts at ``on_train_begin``, named ``TrainingArguments.run_name`` when one is set,
with the ``TrainingArguments`` and the model's config (``model``: architecture, task, number
of labels...) as its config. Every ``on_log`` becomes ``run.log`` at the global step;
evaluation results (``eval_*``) are logged both as metrics (queryable:
``runs ls "metrics.eval_accuracy.max > 0.9"``) and as evaluations (``runs show`` lists them).
With ``log_checkpoints=True`` every saved checkpoint is committed to the model registry
(branch ``runs/<run id>``): its weights, config and tokenizer, not the optimizer, scheduler
and RNG state a Trainer saves beside them (``keep_optimizer_state=True`` commits those too).
The run finishes at ``on_train_end``; a ``trainer.evaluate()`` after ``train()`` is recorded
in the same run (taken up again, then finished).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fmforge.repository import Repository
from fmforge.tracking.runs import Run

# What a Trainer checkpoint holds besides the model: the state to resume training from.
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng_state", "training_args")
_MODEL_CONFIG_KEYS = (
    "model_type", "architectures", "num_labels", "id2label", "problem_type", "_name_or_path",
    "hidden_size", "num_hidden_layers", "vocab_size",
)  # fmt: skip


class FmforgeCallback(TrainerCallback):
    def __init__(
        self,
        project: str,
        *,
        repo: Repository | None = None,
        log_checkpoints: bool = False,
        keep_optimizer_state: bool = False,
        model: str | None = None,
        **run_options: Any,
    ) -> None:
        self.project = project
        self.repo = repo
        self.log_checkpoints = log_checkpoints
        self.keep_optimizer_state = keep_optimizer_state
        self.model = model
        self.run_options = run_options
        self.run: Run | None = None
        self.finished_run: str | None = None  # the id of the run train() ended, for evaluate()
        self._opened: Repository | None = None

    def _repo(self) -> Repository:
        if self.repo is not None:
            return self.repo
        if self._opened is None:
            self._opened = Repository.open()
        return self._opened

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or self.run is not None:
            return
        arguments: dict[str, Any] = args.to_dict()  # type: ignore[no-untyped-call]
        config = {k: v for k, v in arguments.items() if _plain(v)}
        model_config = _model_config(kwargs.get("model"))
        if model_config:
            config["model"] = model_config
        options = dict(self.run_options)
        name = args.run_name
        if name and name != args.output_dir and "name" not in options:
            options["name"] = name
        self.run = Run(self._repo(), self.project, config=config, **options)
        self.finished_run = None

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        numbers = {k: float(v) for k, v in logs.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
        if not numbers:
            return
        evals = {k: v for k, v in numbers.items() if k.startswith("eval_")}
        run, after_training = self.run, False
        if run is None:
            if not (evals and self.finished_run):
                return
            run, after_training = Run.resume(self._repo(), self.finished_run), True
        run.log(numbers, step=state.global_step)
        if evals:
            run.log_eval(evals, step=state.global_step)
        if after_training:
            run.finish()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is None or not self.log_checkpoints:
            return
        checkpoint = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        if self.keep_optimizer_state:
            self.run.log_checkpoint(checkpoint, model=self.model, step=state.global_step)
            return
        with tempfile.TemporaryDirectory(
            prefix="fmforge-checkpoint-", dir=checkpoint.parent
        ) as tmp:
            staged = _weights_only(checkpoint, Path(tmp) / checkpoint.name)
            self.run.log_checkpoint(staged, model=self.model, step=state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None:
            self.run.finish()
            self.finished_run, self.run = self.run.id, None


def _weights_only(checkpoint: Path, staged: Path) -> Path:
    """A copy of ``checkpoint`` without the training state (hard links where possible)."""
    for source in sorted(checkpoint.rglob("*")):
        relative = source.relative_to(checkpoint)
        if source.is_dir() or relative.parts[0].startswith(TRAINING_STATE):
            continue
        if source.name == "trainer_state.json":
            continue
        target = staged / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return staged


def _model_config(model: Any) -> dict[str, Any]:
    """The parts of a model's config that say what it is (architecture, task, labels)."""
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return {}
    values = to_dict()
    chosen = {k: values[k] for k in _MODEL_CONFIG_KEYS if k in values and _plain(values[k])}
    if "id2label" in chosen:
        chosen["id2label"] = {str(k): v for k, v in chosen["id2label"].items()}
    if not chosen.get("architectures"):  # set only when the model is saved: the class says it
        chosen["architectures"] = [type(model).__name__]
    if "num_labels" not in chosen and isinstance(values.get("id2label"), dict):
        chosen["num_labels"] = len(values["id2label"])
    return chosen


def _plain(value: Any) -> bool:
    """JSON-ready config values only (enums and objects are dropped, NaN too)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, str | int | bool)
