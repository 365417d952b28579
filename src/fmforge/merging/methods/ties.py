"""TIES-Merging: trim each task vector to its top-k% entries by magnitude, elect a sign per
coordinate, and average only the entries that agree with it (a disjoint mean), scaled by λ.

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023
(arXiv 2306.01708). k = max(1, int(density · n)) entries are kept per tensor, as mergekit
0.1.5 keeps them.

The top-k needs the k-th largest |τ| of the whole tensor, which a streaming merge never holds: it
is found exactly by radix selection over the bit patterns of |τ| (monotone in the value for
non-negative floats), a 16-bit digit per pass over the rows, with the candidates gathered and
sorted once few remain (two passes in practice). Entries equal to the threshold are kept first
in row-major order, a stable tie-break; mergekit's ``argsort`` breaks such ties in an unspecified
order, so the two differ only on entries tied exactly at the k-th magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fmforge.merging.methods.task_arithmetic import TaskArithmetic

TIES = TaskArithmetic(
    "ties", "TIES-Merging", "https://arxiv.org/abs/2306.01708",
    trim="magnitude", elect=True, normalize=True,
    parameters=frozenset({"lambda", "density", "normalize"}),
)  # fmt: skip

_GATHER = 1 << 20  # candidates few enough to sort in memory
_DIGITS = 1 << 16


def magnitude_keys(delta: torch.Tensor) -> torch.Tensor:
    """|delta| as integers of the same width, ordered as the magnitudes are."""
    magnitude = delta.abs()
    return magnitude.view(torch.int32 if magnitude.element_size() == 4 else torch.int64)


@dataclass(frozen=True)
class Threshold:
    """Keep entries above ``key``, and the first ``ties`` entries equal to it."""

    key: int
    ties: int
    none: bool = False  # k = 0: keep nothing


def top_k_count(density: float, numel: int) -> int:
    """Entries kept: int(density * n), at least one (mergekit 0.1.5's rule)."""
    return max(1, int(density * numel)) if numel else 0


def threshold_in_memory(keys: torch.Tensor, k: int) -> Threshold:
    """The threshold of the ``k`` largest of ``keys`` (the whole tensor at hand)."""
    flat = keys.reshape(-1)
    if k <= 0:
        return Threshold(0, 0, none=True)
    key = int(torch.kthvalue(flat, flat.numel() - k + 1).values)
    greater = int((flat > key).sum())
    return Threshold(key, k - greater)


class RadixSelect:
    """The threshold of the ``k`` largest keys, fed a batch of keys at a time, pass by pass:
    call ``feed`` with every batch of the tensor, then ``advance``; repeat until it is done."""

    def __init__(self, k: int, bits: int) -> None:
        self.k = k
        self.shifts = list(range(bits - 16, -1, -16))
        self.level = 0
        self.prefix = 0
        self.above = 0  # keys known to be larger than every remaining candidate
        self.gathering = False
        self.hist = torch.zeros(_DIGITS, dtype=torch.int64)
        # the candidates of the last pass, in one buffer sized by the histogram (many small
        # pieces kept alive between batch-sized buffers would fragment the heap)
        self.gathered = torch.empty(0, dtype=torch.int64)
        self.filled = 0
        self.result: Threshold | None = None if k > 0 else Threshold(0, 0, none=True)

    @property
    def done(self) -> bool:
        return self.result is not None

    def _candidates(self, keys: torch.Tensor) -> torch.Tensor:
        flat = keys.reshape(-1)
        if self.level == 0:
            return flat
        return flat[(flat >> self.shifts[self.level - 1]) == self.prefix]

    def feed(self, keys: torch.Tensor) -> None:
        chosen = self._candidates(keys)
        if self.gathering:
            self.gathered[self.filled : self.filled + chosen.numel()] = chosen
            self.filled += chosen.numel()
            return
        digits = ((chosen >> self.shifts[self.level]) & (_DIGITS - 1)).to(torch.int64)
        self.hist += torch.bincount(digits, minlength=_DIGITS)

    def advance(self) -> None:
        if self.gathering:
            values = self.gathered[: self.filled].sort(descending=True).values
            key = int(values[self.k - self.above - 1])
            greater = self.above + int((values > key).sum())
            self.result = Threshold(key, self.k - greater)
            return
        # the bucket holding the k-th largest: walk the digits from the top
        descending = self.hist.flip(0).cumsum(0)
        index = int(torch.searchsorted(descending, self.k - self.above))
        digit = _DIGITS - 1 - index
        self.above += int(descending[index - 1]) if index > 0 else 0
        count = int(self.hist[digit])
        self.prefix = (self.prefix << 16) | digit if self.level else digit
        if self.level == len(self.shifts) - 1:
            self.result = Threshold(self.prefix, self.k - self.above)
            return
        self.level += 1
        self.hist.zero_()
        self.gathering = count <= _GATHER
        if self.gathering:
            self.gathered = torch.empty(count, dtype=torch.int64)


class KeepTopK:
    """The keep mask of one task vector, batch after batch in row-major order."""

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self.ties_left = threshold.ties

    def mask(self, keys: torch.Tensor) -> torch.Tensor:
        if self.threshold.none:
            return torch.zeros(keys.shape, dtype=torch.bool)
        keep = keys > self.threshold.key
        if self.ties_left > 0:
            equal = (keys == self.threshold.key).reshape(-1)
            found = int(equal.sum())
            if found > self.ties_left:
                equal &= equal.cumsum(0) <= self.ties_left
                found = self.ties_left
            keep |= equal.reshape(keys.shape)
            self.ties_left -= found
        return keep
