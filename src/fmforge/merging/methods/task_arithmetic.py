"""Task arithmetic, and the family built on it: τᵢ = θᵢ - θ₀, θ = θ₀ + λ Σᵢ wᵢ τᵢ.

Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023 (arXiv 2212.04089). TIES and
DARE are the same sum with a sparsification of each τᵢ first (``trim``) and, for TIES, a sign
elected per coordinate (only the entries that agree with it are summed, and divided by the
weight that agreed): ``TaskArithmetic`` is configured into each of them, as mergekit's
``GeneralizedTaskArithmeticMerge`` is. The arithmetic follows mergekit 0.1.5 operation by
operation, so with ``compute_dtype="float32"`` the result is the same bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fmforge.merging.method import MergeMethod, Rows, Trim

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec


class TaskArithmetic(MergeMethod):
    def __init__(
        self,
        name: str,
        title: str,
        reference: str,
        *,
        trim: Trim | None = None,
        elect: bool = False,
        normalize: bool = False,
        parameters: frozenset[str] = frozenset({"lambda", "normalize"}),
    ) -> None:
        self.name, self.title, self.reference = name, title, reference
        self.trim = trim
        self.elect = elect
        self.normalize = normalize
        self.parameters = parameters

    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        deltas = rows.values
        if rows.keep is not None:
            deltas = deltas * rows.keep
            if self.trim == "random":  # DARE: survivors rescaled by 1/(1 - p)
                deltas = deltas / spec.density
        weights = rows.weights
        weighted = deltas * weights
        if self.elect:
            sign = weighted.sign()
            majority = (weighted.sum(dim=0) >= 0).to(weighted.dtype) * 2 - 1
            agree = sign == majority
            mixed = (weighted * agree).sum(dim=0)
            divisor = (weights * agree).sum(dim=0)
            divisor[divisor == 0] = 1
        else:
            mixed = weighted.sum(dim=0)
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if self.normalize if spec.normalize is None else spec.normalize:
            mixed /= divisor
        if spec.lambda_ != 1:
            mixed *= spec.lambda_
        return mixed


TASK_ARITHMETIC = TaskArithmetic(
    "task_arithmetic", "Task arithmetic", "https://arxiv.org/abs/2212.04089"
)
