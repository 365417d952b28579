"""A PyTorch Lightning logger that records the Trainer's run into fmforge.

    from fmforge.integrations import FmforgeLogger
    trainer = lightning.Trainer(logger=FmforgeLogger("sentiment", base_model="minilm@main"))

The run's id is chosen when the logger is made, so ``logger.version`` (which Lightning reads to
name folders) never starts a run; the run starts when Lightning first logs (on the rank-zero
process only). ``log_hyperparams`` become the run's params, ``log_metrics`` its metrics at the
Trainer's step, and with ``log_model=True`` every checkpoint the ``ModelCheckpoint`` callback
saves is committed to the model registry (its ``state_dict``, on branch ``runs/<run id>``).
``finalize`` ends the run as finished or failed; a later ``validate``, ``test`` or ``fit`` with
the same logger takes the same run up again (``fit`` then ``validate`` is one run).
Built on the ``lightning`` package (``lightning.pytorch``).
"""

from __future__ import annotations

import math
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from fmforge.ledger.events import new_event_id
from fmforge.repository import Repository
from fmforge.tracking.environment import flatten
from fmforge.tracking.runs import Run


class FmforgeLogger(Logger):
    def __init__(
        self,
        project: str,
        *,
        repo: Repository | None = None,
        log_model: bool = False,
        model: str | None = None,
        **run_options: Any,
    ) -> None:
        super().__init__()
        self.project = project
        self._repo = repo
        self._log_model = log_model
        self._model = model
        self._run_options = run_options
        self._run: Run | None = None
        self._id = new_event_id()  # the run's id, known before it starts
        self._started = False  # whether the run was recorded (then later uses resume it)
        self._committed: set[int] = set()  # training steps

    @property
    def name(self) -> str:
        return self.project

    @property
    def version(self) -> str:
        """The run's id (no run is started to answer it)."""
        return self._id

    @property
    @rank_zero_experiment
    def experiment(self) -> Run:
        """The fmforge run (started on first use; taken up again after ``finalize``)."""
        if self._run is None:
            owns = self._repo is None
            repo = self._repo or Repository.open()
            if self._started:
                options = {k: v for k, v in self._run_options.items() if k in _RESUME_OPTIONS}
                self._run = Run.resume(repo, self._id, owns_repo=owns, **options)
            else:
                self._run = Run(
                    repo, self.project, owns_repo=owns, run_id=self._id, **self._run_options
                )
                self._started = True
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kw: Any) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        plain = {k: v for k, v in flatten(values).items() if _plain(v)}
        if plain:
            self.experiment.log_params(plain)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        if "epoch" in metrics:
            numbers["epoch"] = float(metrics["epoch"])
        if numbers:
            self.experiment.log(numbers, step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not self._log_model:
            return
        # The file just written (ModelCheckpoint keeps it in a private field; last and best
        # paths are the fallback). One commit per training step, however many files name it.
        path = ""
        for field in ("_last_checkpoint_saved", "last_model_path", "best_model_path"):
            path = path or str(getattr(checkpoint_callback, field, "") or "")
        if not path or not Path(path).is_file():
            return
        import torch

        # A file this process's Trainer has just written, so unpickling it trusts nothing new.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        step = int(checkpoint.get("global_step", 0))
        if step in self._committed:
            return
        self.experiment.log_checkpoint(checkpoint["state_dict"], model=self._model, step=step)
        self._committed.add(step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is None:
            return
        if status == "success":
            self._run.finish()
        else:
            self._run.finish("failed", f"Lightning finished with status {status!r}")
        self._run = None


_RESUME_OPTIONS = ("flush_interval", "max_buffer_bytes", "detectors", "on_anomaly",
                   "system_interval", "heartbeat")  # fmt: skip


def _plain(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)
