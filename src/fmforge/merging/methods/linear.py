"""Linear average of the models' weights ("model soups"): θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ.

Wortsman et al., "Model soups", ICML 2022 (arXiv 2203.05482). Adapters are first applied to
their base exactly (θᵢ = θ₀ + ΔWᵢ). The arithmetic is mergekit 0.1.5's ``linear`` (products
accumulated input by input with ``addcmul_``, then divided by the summed weights), so with
``compute_dtype="float32"`` the result is the same bit for bit. ``normalize=False`` keeps the
plain weighted sum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.method import MergeMethod, Rows, Space

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec


class Linear(MergeMethod):
    name = "linear"
    title = "Linear average (model soup)"
    reference = "https://arxiv.org/abs/2203.05482"
    space: ClassVar[Space] = "weights"
    parameters = frozenset({"normalize"})
    needs_base = False

    def check(self, spec: MergeSpec, *, has_base: bool, adapters: bool) -> None:
        super().check(spec, has_base=has_base, adapters=adapters)
        if spec.normalize is not False and abs(sum(i.weight for i in spec.inputs)) < 1e-8:
            raise InvalidMerge("linear: the weights sum to 0, so their average is undefined "
                               "(give --no-normalize for a plain weighted sum)")  # fmt: skip

    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        merged = torch.zeros_like(rows.values[0])
        for value, weight in zip(rows.values, rows.weights, strict=True):
            merged.addcmul_(value, weight)
        if spec.normalize is not False:
            merged.div_(rows.weights.sum(dim=0))
        return merged


LINEAR = Linear()
