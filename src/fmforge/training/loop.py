"""The training loop: a plain torch loop over a fixed data order, stepping AdamW with a linear
schedule, reporting to a ``Sink``.

Why not the HF Trainer: bit-exact resume and replay need every source of change pinned, and a
loop of ~100 lines makes that visible. Each epoch's order is ``randperm`` seeded by (seed,
epoch), so a position is (epoch, batch) and resuming skips to it without replaying data; the
torch RNG (dropout) is saved with each checkpoint and restored; evaluation runs in eval mode
and draws no random numbers. With one process on CPU, deterministic algorithms and the
recorded thread count, the same inputs give the same bits (``fmforge runs replay`` checks).

Loss: cross-entropy against each row's target distribution (a one-hot gold label, or the label
model's probabilities), or the mean next-token negative log-likelihood of each row (causal-lm);
rows are averaged with equal weight over the global batch. Under DDP each process takes every
``size``-th row of the batch and the gradient average equals the single-process one (a process
left without a row runs one with weight 0, so every collective still happens).

A checkpoint directory holds the model as ``save_model`` writes it plus ``training_state
.safetensors`` (AdamW's moments and step per parameter, the RNG state) and ``trainer_state
.json`` (position, schedule, optimizer hyper-parameters, parameter names).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from fmforge.errors import InvalidSpec
from fmforge.training.evaluation import score
from fmforge.training.modeling import Job, collate, encode, load_weights, save_model, token_losses
from fmforge.training.spec import TASK_METRICS

STATE_FILE = "training_state.safetensors"
TRAINER_FILE = "trainer_state.json"
STATE_FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where training is: ``step`` steps done; the next batch is ``batch`` of ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


class Sink(Protocol):
    """Where the loop reports: a run (rank 0), nowhere (other ranks), a replay's comparison."""

    evaluates: bool  # whether to evaluate the eval split during training

    def logged(self, step: int, values: dict[str, float]) -> None: ...

    def evaluated(self, position: Position, metrics: dict[str, float]) -> bool:
        """Return True to stop training now (a search pruning the trial)."""
        ...

    def checkpoint(self, position: Position, write: Callable[[Path], None]) -> None: ...

    @property
    def stopped(self) -> bool: ...


class World:
    """One process, or one rank of a ``torch.distributed`` group (rank 0 reports)."""

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        self.rank, self.size = rank, size

    def wrap(self, model: Any) -> Any:
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        if self.size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0])
        dist.broadcast(value, src=0)
        return bool(value.item())


class Loop:
    def __init__(
        self,
        job: Job,
        model: Any,
        head: tuple[str, ...],
        *,
        world: World | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        device: Any = "cpu",
    ) -> None:
        spec = self.spec = job.spec
        self.job, self.head, self.device = job, head, device
        self.world = world or World()
        self.tokenizer = job.tokenizer
        self.encoded = encode(job.tokenizer, job.data.train.texts, job.max_length)
        targets = job.data.train.targets
        self.targets = torch.from_numpy(targets).to(device) if targets is not None else None
        self.per_epoch = math.ceil(len(self.encoded) / spec.batch_size)
        self.total = min(spec.max_steps or 2**62, spec.epochs * self.per_epoch)
        self.module = model.to(device)
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.masks: dict[str, torch.Tensor] = {}
        self._masked: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.set_masks(masks or {})
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.params], lr=spec.lr, weight_decay=spec.weight_decay
        )
        warmup, total = math.ceil(spec.warmup_ratio * self.total), self.total

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.model = self.world.wrap(model)
        self.position = Position()
        self.last_eval: tuple[int, dict[str, float]] | None = None

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Train only the True entries of these parameters (by name; see ``masks``)."""
        by_name = dict(self.params)
        self.masks = {name: mask.to(self.device) for name, mask in masks.items()}
        self._masked = [(by_name[name], mask) for name, mask in self.masks.items()]

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + epoch)
        return [int(i) for i in torch.randperm(len(self.encoded), generator=generator)]

    # ---- one step ------------------------------------------------------------------------

    def loss(self, rows: list[int]) -> tuple[torch.Tensor, float]:
        """(the loss to back-propagate, this rank's mean loss for logging) of a global batch."""
        world = self.world
        mine = rows[world.rank :: world.size]
        weights = torch.ones(len(mine), device=self.device)
        if not mine:  # every rank must run the collectives: one row that counts for nothing
            mine, weights = rows[:1], torch.zeros(1, device=self.device)
        batch = collate(self.tokenizer, [self.encoded[i] for i in mine], self.device)
        logits = self.model(**batch).logits
        if self.targets is not None:
            target = self.targets[torch.tensor(mine, device=self.device)]
            per_row = -(target * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
        else:
            losses = token_losses(logits, batch)
            per_row = losses[:, 0] / losses[:, 1].clamp(min=1)
        total = (per_row * weights).sum()
        local = float(total.detach()) / max(float(weights.sum()), 1.0)
        return total / len(rows) * world.size, local

    def step(self, rows: list[int]) -> float:
        loss, local = self.loss(rows)
        loss.backward()  # type: ignore[no-untyped-call]
        for parameter, mask in self._masked:
            if parameter.grad is not None:
                parameter.grad.mul_(mask)
        if self.spec.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], self.spec.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return local

    # ---- the loop ------------------------------------------------------------------------

    def run(self, sink: Sink) -> Position:
        """Train from ``self.position`` to the end (or a stop); returns where it stopped."""
        spec, start = self.spec, self.position
        self.module.train()
        step = start.step
        for epoch in range(start.epoch, spec.epochs):
            order = self.order(epoch)
            first = start.batch if epoch == start.epoch else 0
            for index in range(first, self.per_epoch):
                if step >= self.total:
                    return self.position
                rows = order[index * spec.batch_size : (index + 1) * spec.batch_size]
                local = self.step(rows)
                step += 1
                end = index + 1 == self.per_epoch
                self.position = (
                    Position(step, epoch + 1, 0) if end else Position(step, epoch, index + 1)
                )
                lr = float(self.scheduler.get_last_lr()[0])
                sink.logged(step, {"loss": local, "lr": lr, "epoch": step / self.per_epoch})
                last = step >= self.total
                stop = False
                if self._eval_due(step, end, last) and sink.evaluates:
                    metrics = self.evaluate() if self.world.rank == 0 else {}
                    stop = self.world.agree(sink.evaluated(self.position, metrics))
                if not last and not stop and self._checkpoint_due(step, end):
                    sink.checkpoint(self.position, self.save)
                if stop or last or sink.stopped:
                    return self.position
        return self.position

    def _eval_due(self, step: int, end: bool, last: bool) -> bool:
        if self.job.data.eval is None:
            return False
        every = self.spec.eval_steps
        return last or (step % every == 0 if every else end)

    def _checkpoint_due(self, step: int, end: bool) -> bool:
        every = self.spec.checkpoint_steps
        return step % every == 0 if every else end

    def evaluate(self) -> dict[str, float]:
        """``eval_<metric>`` of every metric of the task on the eval split."""
        rows = self.job.data.eval
        assert rows is not None
        spec = self.spec
        values = score(
            self.module, self.tokenizer, rows, task=spec.task, metrics=TASK_METRICS[spec.task],
            batch_size=max(spec.batch_size, 32), max_length=self.job.max_length, device=self.device,
        )  # fmt: skip
        metrics = {f"eval_{k}": v for k, v in values.items()}
        self.last_eval = (self.position.step, metrics)
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write a checkpoint of the model and everything needed to go on from here."""
        from safetensors.torch import save_file

        save_model(self.module, self.job, directory, self.masks)
        tensors: dict[str, torch.Tensor] = {"rng/torch": torch.get_rng_state()}
        for name, parameter in self.params:
            for key, value in self.optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{name}/{key}"] = value.detach().cpu().contiguous()
        save_file(tensors, str(directory / STATE_FILE))
        groups = [
            {k: list(v) if isinstance(v, tuple) else v for k, v in g.items() if k != "params"}
            for g in self.optimizer.state_dict()["param_groups"]
        ]
        state = {
            "format": STATE_FORMAT, "position": asdict(self.position),
            "scheduler": self.scheduler.state_dict(), "param_groups": groups,
            "params": [n for n, _ in self.params], "spec_digest": self.spec.digest(),
        }  # fmt: skip
        (directory / TRAINER_FILE).write_text(json.dumps(state, indent=1) + "\n")

    def restore(self, directory: Path) -> None:
        """Go on from the checkpoint in ``directory``: weights, optimizer, schedule, RNG."""
        from safetensors.torch import load_file

        try:
            state = json.loads((directory / TRAINER_FILE).read_text())
            tensors = load_file(str(directory / STATE_FILE))
        except (OSError, ValueError) as exc:
            raise InvalidSpec(f"not a finetune checkpoint: {exc}") from None
        names = [n for n, _ in self.params]
        if state.get("format") != STATE_FORMAT or state.get("params") != names:
            raise InvalidSpec("the checkpoint was made by another model or method")
        load_weights(self.module, self.job, directory)
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for index, name in enumerate(names):
            prefix = f"optimizer/{name}/"
            found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if found:
                per_param[index] = found
        groups = [{**g, "params": list(range(len(names)))} for g in state["param_groups"]]
        self.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["rng/torch"])
        self.position = Position(**state["position"])
