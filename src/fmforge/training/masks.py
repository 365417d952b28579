"""Trainable masks for ``--method sparse``: which entries of each weight a finetune may change.

``finetune(repo, spec, masks={name: bool tensor})`` trains only the True entries (the head,
newly initialised, is trained in full; a body weight without a mask is frozen). Names are the
task model's parameter names (``bert.encoder.layer.0...``) or the base model's
(``encoder.layer.0...``, the registry's tensor names).

Without masks, FishMask chooses them (``fmforge.training.fisher``): the ``--keep`` share of the
body's entries with the largest diagonal Fisher of the base on the training rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import blake3
import torch

from fmforge.errors import InvalidSpec
from fmforge.training.modeling import MASK_FILE, MASK_PREFIX, unwrap


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
