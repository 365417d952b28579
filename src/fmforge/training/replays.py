"""``replay(repo, RUN)``: run a recorded CPU finetune again from its recorded inputs and compare.

The inputs are what the run's config pins: the resolved spec (seed, threads included), the base
commit and the dataset version (not the REFs, which may have moved), and the trainable mask of a
sparse run (given: read back from its commits; FishMask: rebuilt from the recorded Fisher). The
replay trains in memory and records nothing. It compares, bit for bit:

- the loss logged at every step the run logged (a resumed run logged only its own steps);
- at each step the run committed a checkpoint, the replayed weights with the checkpoint's;
- at the end, the replayed weights with the result commit (the last checkpoint for a run that
  was stopped).

The report gives the first step whose loss differs and the first tensor (in file order) that
differs, with the step of that comparison; the replay stops at the first checkpoint that
differs. Only single-process CPU runs are replayed: the bits of a DDP all-reduce or a GPU
kernel are not promised.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import InvalidSpec
from fmforge.models.checkout import load_state_dict, open_model
from fmforge.repository import Repository
from fmforge.tracking.reading import load_run, read_metric
from fmforge.tracking.views import RunsView
from fmforge.training.finetuning import determinism, prepare
from fmforge.training.loop import Loop, Position
from fmforge.training.masks import fishmask, masks_digest, resolve_masks, saved_masks
from fmforge.training.modeling import build_model, save_model, weights_file
from fmforge.training.recording import RESULT_TAG
from fmforge.training.resume import recorded_spec


@dataclass
class ReplayReport:
    run: str
    steps: int = 0
    losses_compared: int = 0
    checkpoints_compared: int = 0
    tensors_compared: int = 0
    result_compared: bool = False
    first_step: int | None = None  # the first step whose loss differs
    recorded_loss: float | None = None
    replayed_loss: float | None = None
    first_tensor: str | None = None  # the first tensor that differs
    tensor_step: int | None = None  # at the comparison of this step
    max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.first_step is None and self.first_tensor is None

    def summary(self) -> str:
        if self.identical:
            return (
                f"bit-identical: {self.steps} steps replayed; {self.losses_compared} losses, "
                f"{self.checkpoints_compared} checkpoint(s)"
                + (" and the result" if self.result_compared else "")
                + f" compared ({self.tensors_compared} tensors)"
            )
        parts = []
        if self.first_step is not None:
            parts.append(
                f"loss differs first at step {self.first_step} "
                f"({self.recorded_loss!r} recorded, {self.replayed_loss!r} replayed)"
            )
        if self.first_tensor is not None:
            parts.append(
                f"tensor {self.first_tensor} differs at step {self.tensor_step} "
                f"(max |difference| {self.max_abs_diff:.3g})"
            )
        return "; ".join(parts)


class _Compare:
    """The replay's sink: compares instead of recording."""

    evaluates = False

    def __init__(
        self, repo: Repository, report: ReplayReport, losses: dict[int, float],
        checkpoints: dict[int, str], last_step: int,
    ) -> None:  # fmt: skip
        self.repo, self.report = repo, report
        self.losses, self.checkpoints, self.last_step = losses, checkpoints, last_step
        self.step = 0
        self.failed = False

    @property
    def stopped(self) -> bool:
        return self.failed or self.step >= self.last_step

    def logged(self, step: int, values: dict[str, float]) -> None:
        self.step = self.report.steps = step
        recorded = self.losses.get(step)
        if recorded is None:
            return
        self.report.losses_compared += 1
        if self.report.first_step is None and recorded != values["loss"]:
            self.report.first_step = step
            self.report.recorded_loss, self.report.replayed_loss = recorded, values["loss"]

    def evaluated(self, position: Position, metrics: dict[str, float]) -> bool:
        return False

    def checkpoint(self, position: Position, write: Callable[[Path], None]) -> None:
        target = self.checkpoints.get(position.step)
        if target is not None:
            self.compare(position.step, target, write)

    def compare(
        self, step: int, target: str, write: Callable[[Path], None], *, result: bool = False
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="fmforge-replay-") as tmp:
            write(Path(tmp))
            found = compare_weights(self.repo, target, weights_file(Path(tmp)))
        if result:
            self.report.result_compared = True
        else:
            self.report.checkpoints_compared += 1
        self.report.tensors_compared += found[0]
        if found[1] is not None and self.report.first_tensor is None:
            self.report.first_tensor, self.report.max_abs_diff = found[1], found[2]
            self.report.tensor_step = step
            self.failed = True


def compare_weights(repo: Repository, target: str, path: Path) -> tuple[int, str | None, float]:
    """(tensors compared, the first that differs from ``target``'s or None, its max |diff|)."""
    from safetensors.torch import load_file

    replayed = load_file(str(path))
    compared = 0
    with load_state_dict(target, repo=repo) as recorded:
        order = [n for n in recorded if n in replayed] + sorted(set(replayed) - set(recorded))
        for name in order:
            compared += 1
            if name not in recorded:
                return compared, name, float("inf")
            a, b = recorded[name], replayed[name]
            if a.dtype != b.dtype or a.shape != b.shape:
                return compared, name, float("inf")
            if not torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
                return compared, name, float((a.double() - b.double()).abs().max())
    return compared, None, 0.0


@mediated("use", targets.run("run"))
def replay(repo: Repository, run: str) -> ReplayReport:
    """Re-run finetune run ``run`` (id, prefix or name) and compare; records nothing."""
    record = load_run(repo, repo.view(RunsView).resolve(run))
    spec = recorded_spec(record)
    config = record.config
    if (config.get("process") or {}).get("nproc", 1) != 1:
        raise InvalidSpec(f"run {record.name} ran on several processes: replay reproduces "
                          "single-process finetunes")  # fmt: skip
    if spec.device != "cpu":
        raise InvalidSpec(f"run {record.name} ran on {spec.device}: replay reproduces CPU runs")
    base, data = config["base"], config["data"]
    pinned = spec.model_copy(
        update={"base": f"{base['model']}@{base['commit']}",
                "data": f"{data['dataset']}@{data['version']}"}
    )  # fmt: skip
    steps, values = read_metric(repo, record.id, "loss")
    losses = {int(s): float(v) for s, v in zip(steps, values, strict=True)}
    checkpoints = {int(c["step"]): f"{c['model']}@{c['commit']}" for c in record.checkpoints}
    result = record.tag_values.get(RESULT_TAG)
    report = ReplayReport(record.id)
    with determinism(pinned) as resolved:
        job = prepare(repo, resolved)
        if job.data.train.ids_digest != data["train"]["ids_digest"]:
            raise InvalidSpec(f"run {record.name}: its training rows no longer read the same")
        model, head = build_model(job)
        mask = config.get("mask") or {}
        saved = _recorded_masks(repo, mask.get("source"), result, checkpoints)
        given = resolve_masks(model, head, saved) if saved is not None else None
        loop = Loop(job, model, head, masks=given)
        if spec.method == "sparse" and given is None:
            fisher = (mask.get("fisher") or {}).get("object")
            if not fisher:
                raise InvalidSpec(f"run {record.name} recorded no Fisher for its mask")
            loop.set_masks(fishmask(repo, loop, fisher_object=fisher)[0])
        if loop.masks and masks_digest(loop.masks) != config["mask"]["digest"]:
            report.notes.append("the trainable mask differs from the recorded one")
        last = max([*losses, *checkpoints, 0])
        sink = _Compare(repo, report, losses, checkpoints, last)
        loop.run(sink)
        final = result or (checkpoints[max(checkpoints)] if checkpoints else None)
        if not sink.failed and final is not None and final not in checkpoints.values():
            sink.compare(
                report.steps,
                final,
                lambda d: save_model(loop.module, job, d, loop.masks),
                result=True,
            )
    return report


def _recorded_masks(
    repo: Repository, source: str | None, result: str | None, checkpoints: dict[int, str]
) -> dict[str, torch.Tensor] | None:
    """A sparse run's mask as given to it (read back from its commits); None for a FishMask,
    which the replay rebuilds from the recorded Fisher."""
    if source not in ("given", "checkpoint"):
        return None
    for target in [*(checkpoints[s] for s in sorted(checkpoints)), *([result] if result else [])]:
        masks = saved_masks(open_model(target, repo=repo))
        if masks is not None:
            return masks
    raise InvalidSpec("the run's trainable mask is in none of its commits")
