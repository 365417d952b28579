"""Reference merges, written from the papers and mergekit 0.1.5's operations, whole tensor at
a time and with none of fmforge's code: what the streaming engine must reproduce."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the int(density * n) largest |delta|, ties broken by position (brute force: a
    full lexicographic sort of (-|delta|, index))."""
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    k = max(1, int(density * flat.numel()))
    magnitude = flat.abs().to(torch.float64).numpy()
    order = np.lexsort((np.arange(flat.numel()), -magnitude))
    mask = torch.zeros_like(flat)
    mask[torch.from_numpy(order[:k].copy())] = 1
    return delta * mask.reshape(delta.shape)


def gta(
    base: torch.Tensor,
    models: list[torch.Tensor],
    weights: list[float],
    *,
    dtype: torch.dtype = torch.float32,
    density: float = 1.0,
    trim: bool = False,
    elect: bool = False,
    normalize: bool = False,
    lam: float = 1.0,
    task_vectors: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """mergekit's GeneralizedTaskArithmetic (task_arithmetic, ties), as it executes; the task
    vectors are ``models`` minus ``base`` unless given (an adapter's exact update)."""
    b = base.to(dtype)
    deltas = [m.to(dtype) - b for m in models] if task_vectors is None else task_vectors
    if trim:
        deltas = [magnitude_trim(d, density) for d in deltas]
    stacked = torch.stack(deltas)
    w = torch.tensor(weights, dtype=dtype).reshape((-1,) + (1,) * base.dim())
    weighted = stacked * w
    if elect:
        sign = weighted.sign()
        majority = (weighted.sum(dim=0) >= 0).to(dtype) * 2 - 1
        mask = sign == majority
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return (b + mixed).to(base.dtype)


def lora_update(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """(B @ A) * scale in float64, the products summed in rank order (numpy, whole matrix)."""
    left, right = b.double().numpy(), a.double().numpy()
    out = np.zeros((left.shape[0], right.shape[1]))
    for k in range(left.shape[1]):
        out += np.outer(left[:, k], right[k])
    return torch.from_numpy(out) * scale


def linear(models: list[torch.Tensor], weights: list[float], dtype: torch.dtype) -> torch.Tensor:
    """mergekit 0.1.5's linear: products accumulated with addcmul_, then divided."""
    w = torch.tensor(weights, dtype=dtype)
    result = torch.zeros_like(models[0], dtype=dtype)
    for model, coefficient in zip(models, w, strict=True):
        result.addcmul_(model.to(dtype), coefficient)
    return result.div_(w.sum()).to(models[0].dtype)


def slerp64(t: float, v0: torch.Tensor, v1: torch.Tensor) -> np.ndarray:
    """SLERP entirely in float64 (mergekit's algorithm, without its float32 steps)."""
    a = v0.to(torch.float64).numpy().reshape(-1)
    b = v1.to(torch.float64).numpy().reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    dot = float(np.dot(a / na, b / nb))
    if abs(dot) > 0.9995:
        out = (1 - t) * a + t * b
    else:
        omega = math.acos(dot)
        out = (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)
    return out.reshape(tuple(v0.shape))


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path
