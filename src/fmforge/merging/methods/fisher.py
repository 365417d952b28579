"""Fisher-weighted averaging: θ = Σᵢ wᵢ Fᵢ θᵢ / Σᵢ wᵢ Fᵢ, with Fᵢ the diagonal Fisher of input i.

Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022 (arXiv
2111.09832): each model's posterior is approximated by a Gaussian with the diagonal Fisher as
precision, and the merge is the mode of their (weighted) product; the plain average is the case
of equal Fishers. Each Fisher is floored at ``FISHER_FLOOR`` (as the paper's code does), so a
coordinate no input is sensitive to gets the plain weighted average. The Fishers are the ones
recorded on the inputs' commits (``FisherComputed``, newest first: ``fisher_of``), so a
data-aware merge needs no data. A tensor that some input's Fisher lacks is averaged with the
weights alone, and the report lists it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.method import MergeMethod, Rows, Space
from fmforge.models.fishers import FisherRecord, ModelFishers

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec
    from fmforge.repository import Repository

FISHER_FLOOR = 1e-6


class FisherWeighted(MergeMethod):
    name = "fisher"
    title = "Fisher-weighted averaging"
    reference = "https://arxiv.org/abs/2111.09832"
    space: ClassVar[Space] = "weights"
    parameters = frozenset({"normalize"})
    needs_base = False
    inputs = (2, None)

    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        weights = rows.weights
        fisher = rows.extra.get("fisher")
        if fisher is None:
            return (weights * rows.values).sum(dim=0) / weights.sum(dim=0)
        precision = weights * fisher.clamp_min(FISHER_FLOOR)
        return (precision * rows.values).sum(dim=0) / precision.sum(dim=0)


FISHER = FisherWeighted()


def fisher_of(repo: Repository, commit: str, label: str) -> FisherRecord:
    """The newest Fisher recorded for ``commit``; refused when there is none."""
    found = repo.view(ModelFishers).fisher(commit)
    if found is None:
        raise InvalidMerge(
            f"{label}: no Fisher recorded for commit {commit[:12]} (compute one with "
            "`fmforge fisher`)"
        )
    return found
