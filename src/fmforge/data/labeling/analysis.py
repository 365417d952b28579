"""Labeling-function summaries: coverage, overlaps, conflicts, polarity, accuracy on gold.

``LFSummary`` keeps per-row vote counts, so editing one LF (``replace``) updates every LF's
figures by visiting only the rows whose vote changed, not the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmforge.errors import LabelModelError

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class LFStats:
    index: int
    coverage: float  # fraction of rows it votes on
    overlap: float  # ... where another LF votes too
    conflict: float  # ... where another LF votes for another class
    polarity: list[int]  # the classes it votes for
    correct: int | None = None  # on gold labels, when given
    incorrect: int | None = None

    @property
    def accuracy(self) -> float | None:
        if self.correct is None or self.incorrect is None:
            return None
        voted = self.correct + self.incorrect
        return self.correct / voted if voted else None


class LFSummary:
    """Per-LF statistics of a label matrix (int8 is enough: -1 abstains), kept up to date as
    columns are replaced."""

    def __init__(self, L: Any, cardinality: int | None = None, gold: Any = None) -> None:
        matrix = np.asarray(L)
        if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.integer):
            raise LabelModelError("an LF summary needs a 2-D integer label matrix")
        self.matrix = matrix.astype(np.int8, copy=True)
        self.n, self.m = self.matrix.shape
        self.k = cardinality or int(self.matrix.max(initial=0)) + 1
        if int(self.matrix.min(initial=-1)) < -1 or int(self.matrix.max(initial=0)) >= self.k:
            raise LabelModelError(f"votes must be -1..{self.k - 1}")
        self.gold = None if gold is None else np.asarray(gold, dtype=np.int64)
        if self.gold is not None and self.gold.shape != (self.n,):
            raise LabelModelError(f"gold has {self.gold.size} labels for {self.n} rows")
        # Per row: how many LFs vote each class (what overlaps and conflicts are made of);
        # per LF: its votes per class and, with gold labels, how many are right.
        self.counts = np.stack([np.sum(self.matrix == c, axis=1) for c in range(self.k)], axis=1)
        self.counts = self.counts.astype(np.int32)
        self.votes = self.counts.sum(axis=1)
        self._class_votes = np.stack(
            [np.sum(self.matrix == c, axis=0) for c in range(self.k)], axis=1
        )
        self._correct = (
            None if self.gold is None else np.sum(self.matrix == self.gold[:, None], axis=0)
        )
        self._overlaps = np.zeros(self.m, np.int64)
        self._conflicts = np.zeros(self.m, np.int64)
        self._account(self.matrix, self._flags(slice(None)), sign=1)

    def _flags(self, rows: slice | Array) -> Array:
        """Per row: [more than one vote, votes for other than 0, ..., other than k - 1]."""
        counts, votes = self.counts[rows], self.votes[rows]
        return np.column_stack([votes > 1, *(votes > counts[:, c] for c in range(self.k))])

    def _account(self, sub: Array, flags: Array, sign: int) -> None:
        """Add (or take away) every LF's overlap and conflict counts on rows ``sub``."""
        self._overlaps += sign * (sub[flags[:, 0]] >= 0).sum(axis=0)
        for c in range(self.k):  # a vote for c conflicts where the row has votes for others
            self._conflicts += sign * (sub[flags[:, c + 1]] == c).sum(axis=0)

    def replace(self, lf: int, column: Any) -> None:
        """LF ``lf`` now votes ``column``. Only rows whose vote changed are visited, and of
        those, every LF only where the row's overlap or conflict state flipped."""
        new = np.asarray(column).astype(np.int8)
        if new.shape != (self.n,):
            raise LabelModelError(f"LF {lf}'s new votes must be {self.n} values, got {new.shape}")
        if int(new.min(initial=-1)) < -1 or int(new.max(initial=0)) >= self.k:
            raise LabelModelError(f"votes must be -1..{self.k - 1}")
        rows = np.flatnonzero(new != self.matrix[:, lf])
        if rows.size == 0:
            return
        before = self._flags(rows)
        old, fresh = self.matrix[rows, lf], new[rows]
        for c in range(self.k):
            delta = (fresh == c).astype(np.int32) - (old == c)
            self.counts[rows, c] += delta
            self._class_votes[lf, c] += int(delta.sum())
        self.votes[rows] = self.counts[rows].sum(axis=1)
        if self._correct is not None and self.gold is not None:
            gold = self.gold[rows]
            self._correct[lf] += int(np.sum(fresh == gold)) - int(np.sum(old == gold))
        after = self._flags(rows)
        flipped = np.any(before != after, axis=1)
        # Rows whose state flipped: every LF's contribution, before and after.
        sub_old = self.matrix[rows[flipped]]
        self._account(sub_old, before[flipped], sign=-1)
        sub_new = sub_old.copy()
        sub_new[:, lf] = fresh[flipped]
        self._account(sub_new, after[flipped], sign=1)
        # The other changed rows: only this LF's own contribution moved.
        steady, kept = ~flipped, before[~flipped]
        o, f = old[steady], fresh[steady]
        self._overlaps[lf] += int(np.sum((f >= 0) & kept[:, 0])) - int(
            np.sum((o >= 0) & kept[:, 0])
        )
        for c in range(self.k):
            disputed = kept[:, c + 1]
            self._conflicts[lf] += int(np.sum((f == c) & disputed)) - int(
                np.sum((o == c) & disputed)
            )
        self.matrix[rows, lf] = fresh

    def stats(self) -> list[LFStats]:
        out = []
        for j in range(self.m):
            voted = int(self._class_votes[j].sum())
            correct = None if self._correct is None else int(self._correct[j])
            out.append(
                LFStats(
                    j, voted / self.n, self._overlaps[j] / self.n, self._conflicts[j] / self.n,
                    [c for c in range(self.k) if self._class_votes[j, c] > 0], correct,
                    None if correct is None else voted - correct,
                )
            )  # fmt: skip
        return out
