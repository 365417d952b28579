"""Choosing among candidate LFs, Snuba-style, from their out-of-fold votes on the examples.

Each candidate has out-of-fold votes on the labelled examples (the votes of the same heuristic
generated without the example's fold) and votes on the unlabelled rows. Its precision is the
Laplace-smoothed share of its out-of-fold votes that are right. The greedy loop:

1. candidates are out when their smoothed out-of-fold precision is below ``min_precision``
   (``1/k + 0.6 (1 - 1/k)``: 0.8 for two classes, 0.68 for five), when fewer than
   ``min_votes`` of their out-of-fold votes back it (``n / 6k`` clipped to 2..4: 4 for 50
   examples of two classes, 2 for 10 of each of five; an estimate from 2 votes is noise), or
   when they vote on no unlabelled row;
2. the next candidate is the one with the best ``precision * (log(1 + new) + 0.1 log(1 +
   overlap))``, where ``new`` counts the unlabelled rows no chosen LF covers yet and
   ``overlap`` those it covers again (coverage first, agreement second);
3. it joins when the out-of-fold accuracy of the chosen set (a vote weighted by each LF's
   log-odds, rows nobody votes on given the default class) does not fall and it adds
   coverage or accuracy; otherwise it is dropped;
4. stop when no candidate is left (no gain), at ``MAX_LFS``, or at the deadline (the budget).

The default class is the majority class of the examples no chosen LF votes on (out of fold).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
FOLDS = 5
MAX_LFS = 60


@dataclass(frozen=True)
class Selection:
    chosen: list[int]  # candidate indices, in the order chosen
    default: int  # the default class
    oof_accuracy: float  # of the chosen set with the default rule, on the examples
    stopped: str  # "no gain" | "limit" | "budget"
    steps: int


def precision(oof: Array, y: Array) -> tuple[Array, Array, Array]:
    """Per candidate: (right, fired, smoothed precision) of its out-of-fold votes."""
    fired = (oof >= 0).sum(axis=0).astype(float)
    right = (oof == y[:, None]).sum(axis=0).astype(float)
    return right, fired, (right + 1.0) / (fired + 2.0)


def weights(smoothed: Array, k: int) -> Array:
    return np.asarray(np.log(smoothed * (k - 1) / (1.0 - smoothed)))


def aggregate(votes: Array, w: Array, k: int, default: int) -> Array:
    """Weighted vote per row; rows nobody votes on get ``default``; ties go to the lower
    class index (deterministic)."""
    scores = np.zeros((votes.shape[0], k))
    for c in range(k):
        scores[:, c] = ((votes == c) * w).sum(axis=1)
    covered = (votes >= 0).any(axis=1)
    return np.where(covered, scores.argmax(axis=1), default)


def default_class(votes: Array, y: Array, k: int) -> int:
    """The majority class of the examples ``votes`` leave uncovered (of all, if none)."""
    uncovered = ~(votes >= 0).any(axis=1) if votes.shape[1] else np.ones(len(y), bool)
    pool = y[uncovered] if uncovered.any() else y
    return int(np.bincount(pool, minlength=k).argmax())


def gates(n: int, k: int) -> tuple[float, int]:
    """(least smoothed out-of-fold precision, least out-of-fold votes) for ``n`` examples of
    ``k`` classes."""
    return 1 / k + 0.6 * (1 - 1 / k), int(np.clip(round(n / (6 * k)), 2, 4))


def select(
    oof: Array, unlabelled: Array, y: Array, k: int, *, deadline: float, max_lfs: int = MAX_LFS
) -> Selection:
    """The greedy loop above; ``oof`` is examples x candidates, ``unlabelled`` rows x
    candidates (int8, -1 = abstain)."""
    _, fired, smooth = precision(oof, y)
    w = weights(np.clip(smooth, 1e-6, 1 - 1e-6), k)
    fires = unlabelled >= 0
    least, votes = gates(len(y), k)
    eligible = [
        j for j in range(oof.shape[1])
        if smooth[j] >= least - 1e-12 and fired[j] >= votes and fires[:, j].any()
    ]  # fmt: skip
    chosen: list[int] = []
    covered = np.zeros(unlabelled.shape[0], bool)
    default = default_class(oof[:, :0], y, k)
    accuracy = float(np.mean(aggregate(oof[:, :0], w[:0], k, default) == y))
    stopped, steps = "no gain", 0
    while eligible:
        if time.monotonic() > deadline:
            stopped = "budget"
            break
        if len(chosen) >= max_lfs:
            stopped = "limit"
            break
        steps += 1
        columns = fires[:, eligible]
        new = (columns & ~covered[:, None]).sum(axis=0)
        again = (columns & covered[:, None]).sum(axis=0)
        score = smooth[eligible] * (np.log1p(new) + 0.1 * np.log1p(again))
        best = eligible[int(np.argmax(score))]  # the first of equals: deterministic
        eligible.remove(best)
        trial = [*chosen, best]
        trial_default = default_class(oof[:, trial], y, k)
        trial_accuracy = float(np.mean(aggregate(oof[:, trial], w[trial], k, trial_default) == y))
        adds = bool(np.any(fires[:, best] & ~covered))
        if trial_accuracy < accuracy - 1e-12 or (trial_accuracy <= accuracy + 1e-12 and not adds):
            continue
        chosen, default, accuracy = trial, trial_default, trial_accuracy
        covered |= fires[:, best]
    return Selection(chosen, default, accuracy, stopped, steps)


def folds(y: Array, seed: int) -> list[tuple[Array, Array]]:
    """(training, held-out) indices of FOLDS folds, stratified by class, shuffled by seed."""
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = (np.arange(members.size) + offset) % FOLDS
        offset += members.size
    everything = np.arange(len(y))
    return [(everything[fold_of != f], everything[fold_of == f]) for f in range(FOLDS)]
