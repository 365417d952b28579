"""The conflict report: how much the task vectors of a merge fight, tensor by tensor.

For each tensor some input changes, over its task vectors τᵢ (an input minus the base, an
adapter's exact update): their norms; their pairwise cosines; the share of entries each input
keeps (after TIES' or DARE's trimming; otherwise its non-zero entries); among the entries two or
more inputs keep, the share where their signs disagree (``sign_conflict``); and the share of each
input's kept, weighted mass that a TIES sign election drops (``dropped``: what the election drops
under TIES and DARE-TIES, and would drop under the others). ``conflict``, the mean of
``dropped``, ranks the tensors: the top ones are where the inputs disagree most, flagged before
any evaluation. The report is a JSON object stored with the merge commit (its ``provenance``
names it), and ``fmforge model merge`` prints the most conflicted tensors.

Norms and cosines are exact. The entry-wise shares (kept, overlap, sign conflict, dropped) of a
tensor over ``EXACT_UP_TO`` entries are measured on every ``SAMPLE_EVERY``-th row (and exactly
below): a systematic sample that keeps the report at a fraction of the merge's cost, where a
full count would cost several times the merge itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

REPORT_FORMAT = 1
EXACT_UP_TO = 1 << 16
SAMPLE_EVERY = 8


@dataclass
class TensorStats:
    """Sums over the rows of one tensor, in float64."""

    inputs: int
    every: int = 1  # rows sampled for the entry-wise shares: one in ``every``
    numel: int = 0  # entries sampled
    gram: torch.Tensor = field(init=False)  # τᵢ·τⱼ
    kept: torch.Tensor = field(init=False)
    overlap: int = 0  # entries kept by two or more inputs
    disagree: int = 0  # ... whose kept signs differ
    mass: torch.Tensor = field(init=False)  # Σ|wᵢ τᵢ| over kept entries
    dropped: torch.Tensor = field(init=False)  # ... where the elected sign differs
    _weights: list[float] | None = None

    def __post_init__(self) -> None:
        n = self.inputs
        self.gram = torch.zeros((n, n), dtype=torch.float64)
        self.kept = torch.zeros(n, dtype=torch.float64)
        self.mass = torch.zeros(n, dtype=torch.float64)
        self.dropped = torch.zeros(n, dtype=torch.float64)

    @classmethod
    def of(cls, inputs: int, shape: tuple[int, ...]) -> TensorStats:
        numel = math.prod(shape) if shape else 1
        return cls(inputs, every=SAMPLE_EVERY if numel > EXACT_UP_TO else 1)

    def add(
        self, deltas: torch.Tensor, kept: torch.Tensor, weights: torch.Tensor, start: int = 0
    ) -> float:
        """One batch of rows: raw task vectors ``[n, ...]``, the kept (trimmed) ones, and the
        weights shaped to broadcast; ``start``: the batch's first row. Returns the batch's sum
        of squared task-vector entries. A handful of
        element-wise passes; each batch's sums are taken in the compute dtype and accumulated in
        float64.

        With sᵢ = sign(keptᵢ): an entry is kept by two or more inputs where Σ|sᵢ| >= 2, and
        their signs disagree where |Σsᵢ| < Σ|sᵢ|. With e = ±1 the elected sign (of
        Σwᵢ·keptᵢ), Aᵢ = Σ|keptᵢ| and Pᵢ = Σ keptᵢ·e, input i's entries against e carry
        |wᵢ|(Aᵢ - sign(wᵢ)Pᵢ)/2 of its weighted mass.
        """
        n = self.inputs
        flat = deltas.reshape(n, -1)
        gram = (flat @ flat.T).to(torch.float64)
        self.gram += gram
        if self.every > 1:  # the rows whose index in the tensor is a multiple of ``every``
            kept = kept[:, (-start) % self.every :: self.every]
        kept_flat = kept.reshape(n, -1)
        self.numel += kept_flat.shape[1]
        if self._weights is None:  # the same for every batch
            self._weights = [float(v) for v in weights.reshape(-1)]
        w = self._weights
        signs = kept_flat.sign()
        present = signs.abs()
        # per-batch sums in the compute dtype (exact for counts), accumulated in float64
        self.kept += present.sum(dim=1).to(torch.float64)
        signed, count = signs[0].clone(), present[0].clone()
        total = kept_flat[0] * w[0]
        for i in range(1, n):
            signed += signs[i]
            count += present[i]
            total.add_(kept_flat[i], alpha=w[i])
        self.overlap += int(torch.count_nonzero(count >= 2))
        self.disagree += int(torch.count_nonzero(signed.abs_() < count))
        elected = torch.where(total >= 0, 1.0, -1.0).to(kept.dtype)
        absolute = kept_flat.abs().sum(dim=1).to(torch.float64)
        aligned = (kept_flat * elected).sum(dim=1).to(torch.float64)
        scale = torch.tensor([abs(v) for v in w], dtype=torch.float64)
        direction = torch.tensor([1.0 if v >= 0 else -1.0 for v in w], dtype=torch.float64)
        self.mass += scale * absolute
        self.dropped += scale * (absolute - direction * aligned) / 2
        return float(gram.diagonal().sum())

    def record(self, name: str, shape: tuple[int, ...]) -> dict[str, Any]:
        norms = self.gram.diagonal().sqrt()
        n = self.inputs
        cosine = [
            [
                _round(float(self.gram[i, j]) / float(norms[i] * norms[j]))
                if norms[i] > 0 and norms[j] > 0
                else None
                for j in range(n)
            ]
            for i in range(n)
        ]
        dropped = [
            _round(float(self.dropped[i] / self.mass[i])) if self.mass[i] > 0 else 0.0
            for i in range(n)
        ]
        return {
            "name": name,
            "shape": list(shape),
            "norms": [_round(float(v)) for v in norms],
            "cosine": cosine,
            "kept": [_round(float(k) / max(self.numel, 1)) for k in self.kept],
            "overlap": _round(self.overlap / max(self.numel, 1)),
            "sign_conflict": _round(self.disagree / self.overlap) if self.overlap else 0.0,
            "dropped": dropped,
            "conflict": _round(sum(dropped) / n),
        }


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value


def summarize(records: list[dict[str, Any]], unchanged: int) -> dict[str, Any]:
    """Totals over the changed tensors, weighted by their size."""
    sizes = [math.prod(r["shape"]) if r["shape"] else 1 for r in records]
    total = sum(sizes) or 1
    overlap = sum(r["overlap"] * s for r, s in zip(records, sizes, strict=True))
    disagree = sum(
        r["sign_conflict"] * r["overlap"] * s for r, s in zip(records, sizes, strict=True)
    )
    conflict = sum(r["conflict"] * s for r, s in zip(records, sizes, strict=True))
    return {
        "changed": len(records),
        "unchanged": unchanged,
        "overlap": _round(overlap / total),
        "sign_conflict": _round(disagree / overlap) if overlap else 0.0,
        "conflict": _round(conflict / total),
    }


def most_conflicted(report: dict[str, Any], count: int = 10) -> list[dict[str, Any]]:
    """The ``count`` tensors with the highest ``conflict``, highest first."""
    ranked = sorted(report["tensors"], key=lambda r: (-r["conflict"], r["name"]))
    return ranked[:count]
