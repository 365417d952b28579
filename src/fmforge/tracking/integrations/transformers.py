"""A ``transformers`` ``TrainerCallback`` that records the Trainer's run into fmforge.

    trainer = Trainer(..., callbacks=[FmforgeCallback("sentiment", base_model="minilm@main")])

The run starts at ``on_train_begin`` with the ``TrainingArguments`` as its config, every
``on_log`` becomes ``run.log`` at the global step, evaluation logs become ``log_eval``, and with
``log_checkpoints=True`` every saved checkpoint is committed to the model registry (branch
``runs/<run id>``). The run finishes at ``on_train_end``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fmforge.repository import Repository
from fmforge.tracking.runs import Run


class FmforgeCallback(TrainerCallback):
    def __init__(
        self,
        project: str,
        *,
        repo: Repository | None = None,
        log_checkpoints: bool = False,
        model: str | None = None,
        **run_options: Any,
    ) -> None:
        self.project = project
        self.repo = repo
        self.log_checkpoints = log_checkpoints
        self.model = model
        self.run_options = run_options
        self.run: Run | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or self.run is not None:
            return
        arguments: dict[str, Any] = args.to_dict()  # type: ignore[no-untyped-call]
        config = {k: v for k, v in arguments.items() if _plain(v)}
        owns = self.repo is None
        self.run = Run(
            self.repo or Repository.open(), self.project, config=config, owns_repo=owns,
            **self.run_options,
        )  # fmt: skip

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.run is None or not logs:
            return
        numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        evals = {k: v for k, v in numbers.items() if k.startswith("eval_")}
        train = {k: v for k, v in numbers.items() if k not in evals}
        if train:
            self.run.log(train, step=state.global_step)
        if evals:
            self.run.log_eval(evals, step=state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is None or not self.log_checkpoints:
            return
        checkpoint = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            self.run.log_checkpoint(checkpoint, model=self.model, step=state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _plain(value: Any) -> bool:
    """JSON-ready config values only (enums and objects are dropped, NaN too)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, str | int | bool)
