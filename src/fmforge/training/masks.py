"""Trainable masks for ``--method sparse``: which entries of each weight a finetune may change.

``finetune(repo, spec, masks={name: bool tensor})`` trains only the True entries (the head,
newly initialised, is trained in full; a body weight without a mask is frozen). Names are the
task model's parameter names (``bert.encoder.layer.0...``) or the base model's
(``encoder.layer.0...``, the registry's tensor names).

Without masks, FishMask chooses them (``fmforge.training.fisher``): the ``--keep`` share of the
body's entries with the largest diagonal Fisher of the base on the training rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import torch

from fmforge.errors import InvalidSpec
from fmforge.models.fishers import FisherRecord, ModelFishers
from fmforge.repository import Repository
from fmforge.training.fisher import (
    FisherResult,
    diagonal_fisher,
    parameter_names,
    read_fisher,
    store_fisher,
    stored_names,
)
from fmforge.training.modeling import MASK_FILE, MASK_PREFIX, unwrap

if TYPE_CHECKING:
    from fmforge.training.loop import Loop


def in_head(name: str, head: tuple[str, ...]) -> bool:
    return any(part in head for part in name.split("."))


def resolve_masks(
    model: Any, head: tuple[str, ...], masks: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``masks`` keyed by the model's parameter names, checked (each a bool tensor of its
    parameter's shape); body parameters without one are frozen."""
    model = unwrap(model)
    params = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "")
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        target = name if name in params else f"{prefix}.{name}"
        if target not in params:
            raise InvalidSpec(f"mask for {name!r}: the model has no such parameter")
        tensor = torch.as_tensor(mask)
        if tensor.dtype != torch.bool or tuple(tensor.shape) != tuple(params[target].shape):
            raise InvalidSpec(
                f"mask for {name!r}: expected a bool tensor of shape "
                f"{list(params[target].shape)}, got {tensor.dtype} {list(tensor.shape)}"
            )
        if in_head(target, head):
            continue  # the head is trained in full
        out[target] = tensor
    for name, parameter in params.items():
        if name not in out and not in_head(name, head):
            parameter.requires_grad_(False)
    return out


def masks_digest(masks: Mapping[str, torch.Tensor]) -> str:
    """blake3 over the masks' names and bits, in name order."""
    hasher = blake3.blake3()
    for name in sorted(masks):
        hasher.update(name.encode() + b"\0")
        hasher.update(masks[name].to(torch.uint8).contiguous().numpy().tobytes())
    return hasher.hexdigest()


def masks_summary(masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {"digest": masks_digest(masks), "entries": total, "trainable": kept}


def saved_masks(directory: Path) -> dict[str, torch.Tensor] | None:
    """The trainable mask a saved model directory holds, keyed by parameter name."""
    if not (directory / MASK_FILE).is_file():
        return None
    from safetensors.torch import load_file

    saved = load_file(str(directory / MASK_FILE))
    return {k.removeprefix(MASK_PREFIX): v for k, v in saved.items()}


# ---- FishMask -------------------------------------------------------------------------------


def fisher_masks(
    fisher: Mapping[str, torch.Tensor], names: Mapping[str, str], shapes: Mapping[str, Any],
    keep: float,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """FishMask: parameter -> bool mask keeping the ``keep`` share of all the entries of these
    parameters with the largest Fisher, chosen across all of them at once. ``names``:
    parameter -> its tensor name in ``fisher``; ``shapes``: parameter -> shape. Ties at the
    threshold go to the lowest positions (parameters in order), so the mask is a function of
    the Fisher alone."""
    flats = []
    for param, shape in shapes.items():
        found = fisher.get(names.get(param, param))
        if found is None or tuple(found.shape) != tuple(shape):
            found = torch.zeros(tuple(shape), dtype=torch.float32)
        flats.append(found.float().reshape(-1))
    flat = torch.cat(flats) if flats else torch.zeros(0)
    if not flat.numel():
        raise InvalidSpec("--method sparse: the model has no body weights to choose from")
    k = max(1, min(flat.numel(), math.ceil(keep * flat.numel())))
    threshold = torch.topk(flat, k, sorted=False).values.min()
    chosen = flat > threshold
    missing = k - int(chosen.sum())
    if missing > 0:
        chosen[torch.nonzero(flat == threshold).squeeze(-1)[:missing]] = True
    out, offset = {}, 0
    for param, shape in shapes.items():
        n = math.prod(tuple(shape))
        out[param] = chosen[offset : offset + n].view(tuple(shape)).clone()
        offset += n
    return out


def fishmask(
    repo: Repository, loop: Loop, *, record: bool = True, fisher_object: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """FishMask for a sparse finetune's ``loop``: (parameter -> mask over every body
    parameter, what the run records about it). The Fisher is the one recorded as
    ``fisher_object`` (a replay, a resumed run), else the newest recorded for the base commit
    on the train rows of this data version and task, else computed now on the model built for
    training (its head seeded as the spec says; ``DEFAULT_EXAMPLES`` examples, empirical) and
    recorded (unless ``record`` is off: a rank other than 0)."""
    job, spec = loop.job, loop.spec
    module = unwrap(loop.module)
    body = {n: p for n, p in loop.params if not in_head(n, loop.head)}
    names = parameter_names(module, stored_names(repo, job.base), keep_others=False)
    version = job.data.version
    dataset = version.ref + (f":{spec.train_split}" if spec.train_split else "")
    found: FisherRecord | FisherResult | None = None
    if fisher_object is not None:
        tensors = read_fisher(repo, fisher_object)
        info: dict[str, Any] = {"object": fisher_object}
    else:
        found = _newest(repo.view(ModelFishers), job.base_commit, version.id, dataset, spec.task)
        if found is not None:
            tensors = read_fisher(repo, found)
        else:
            started = time.perf_counter()
            tensors, used = diagonal_fisher(
                module, loop.encoded, job.data.train.targets,
                {p: names[p] for p in body if p in names}, task=spec.task, seed=spec.seed,
                device=loop.device,
            )  # fmt: skip
            found = FisherResult(job.base_model, job.base_commit, "", dataset, version.id,
                                 used, spec.task, "empirical", spec.seed, len(tensors),
                                 0.0)  # fmt: skip
            if record:
                found = store_fisher(
                    repo, job.base_model, job.base_commit, tensors, dataset=dataset,
                    dataset_version=version.id, examples=used, task=spec.task,
                    kind="empirical", seed=spec.seed, started=started,
                )  # fmt: skip
        info = {
            "object": found.object, "dataset": found.dataset, "examples": found.examples,
            "kind": found.kind, "seed": found.seed,
            "computed": isinstance(found, FisherResult),
        }  # fmt: skip
    shapes = {n: tuple(p.shape) for n, p in body.items()}
    return fisher_masks(tensors, names, shapes, spec.keep or 0.0), info


def _newest(index: Any, commit: str, version: str, dataset: str, task: str) -> FisherRecord | None:
    for record in reversed(index.of_commit(commit)):
        if (record.dataset_version, record.dataset, record.task) == (version, dataset, task):
            return record  # type: ignore[no-any-return]
    return None
