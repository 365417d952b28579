"""What a merge method is: a small kernel the streaming engine calls on rows of one tensor.

The engine (``merging.stream``) reads the same rows of the base and of every input, turns them
into task vectors (an input minus the base; an adapter's exact update ``(alpha/r)·B·A``) or
full weights, trims them when the method asks (TIES' magnitude top-k, DARE's random drop: a
per-input ``keep`` mask over the whole tensor), and hands the rows to ``combine``. Every method
here works element by element across inputs, so rows merge independently; a method that needs a
statistic of the whole tensor first (SLERP's angle) gathers it in ``scan``, a first pass over
the same rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from fmforge.errors import InvalidMerge

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec

Space = Literal["delta", "weights"]
Trim = Literal["magnitude", "random"]


@dataclass
class Rows:
    """Rows ``start:stop`` of one tensor, in the compute dtype.

    ``base``: the base's rows (None for a merge without a base). ``values``: stacked
    ``[inputs, rows, ...]``: task vectors when the method works in delta space, else weights.
    ``keep``: the trimming mask (same shape as ``values``) when the method trims.
    ``weights``: one per input, shaped to broadcast against ``values``.
    ``extra``: what the method's inputs carry besides (Fisher rows).
    """

    base: torch.Tensor | None
    values: torch.Tensor
    weights: torch.Tensor
    keep: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class MergeMethod(ABC):
    """A merge method: a short name, its paper, what it needs, and its kernel.

    ``space``: ``"delta"`` combines task vectors and the engine adds the base back;
    ``"weights"`` combines full weights. ``parameters``: the ``MergeSpec`` fields it reads
    (any other parameter given is refused). ``trim``: the sparsification the engine applies
    before ``combine`` (``density`` of each task vector is kept).
    """

    name: str
    title: str
    reference: str
    space: ClassVar[Space] = "delta"
    parameters: frozenset[str] = frozenset()
    trim: Trim | None = None
    needs_base: bool = True
    inputs: tuple[int, int | None] = (1, None)  # fewest and most inputs
    has_scan: ClassVar[bool] = False

    def check(self, spec: MergeSpec, *, has_base: bool, adapters: bool) -> None:
        """Refuse a spec this method cannot carry out (one line, naming the problem)."""
        count = len(spec.inputs)
        low, high = self.inputs
        if count < low or (high is not None and count > high):
            wanted = f"exactly {low}" if low == high else f"at least {low}"
            if high is not None and low != high:
                wanted = f"{low} to {high}"
            raise InvalidMerge(f"method {self.name} merges {wanted} input(s), got {count}")
        if self.needs_base and not has_base:
            raise InvalidMerge(
                f"method {self.name} combines task vectors: give the base model (--base)"
            )
        extra = sorted(spec.given_parameters() - self.parameters)
        if extra:
            names = ", ".join(extra)
            reads = ", ".join(sorted(self.parameters)) or "weights only"
            raise InvalidMerge(f"method {self.name} takes no {names} (it reads: {reads})")

    def scan_passes(self, spec: MergeSpec) -> int:
        """Passes over the rows ``scan`` needs before ``combine`` (0: none)."""
        return 1 if self.has_scan else 0

    def scan_state(self, spec: MergeSpec, shape: tuple[int, ...]) -> Any:
        """A fresh accumulator for ``scan`` (one per tensor of this shape)."""
        return None

    def scan(self, state: Any, rows: Rows, spec: MergeSpec, index: int) -> Any:
        """Accumulate a whole-tensor statistic over one batch of rows during pass ``index``;
        returns the state."""
        return state

    def scan_finish(self, state: Any, spec: MergeSpec, index: int) -> Any:
        """The end of pass ``index``: returns the state."""
        return state

    @abstractmethod
    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        """The merged rows: a task vector (``space == "delta"``) or weights."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "reference": self.reference}
