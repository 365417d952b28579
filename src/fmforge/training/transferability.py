"""Scores of frozen features for a labelled task: LogME, a k-fold linear probe, Kendall's tau.

**LogME** (You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021, arXiv 2102.11005). For each class ``c``, the one-vs-rest targets
``y = [label == c]`` are modelled as a Bayesian linear regression on the features ``F``
(``N x D``): ``w ~ N(0, I/alpha)``, ``y ~ N(F w, I/beta)``. The log evidence

    L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2 pi - beta/2 |F m - y|^2
                     - alpha/2 m'm - 1/2 log |A|,   A = alpha I + beta F'F,  m = beta A^-1 F'y

is maximised by the paper's fixed-point iteration (MacKay's): with ``sigma_i`` the eigenvalues
of ``F'F``, ``gamma = sum beta sigma_i / (alpha + beta sigma_i)``, ``alpha <- gamma / m'm``,
``beta <- (N - gamma) / |F m - y|^2``, until ``alpha/beta`` settles. The score is the mean over
classes of ``L / N`` at the maximum. Everything is computed in the eigenbasis of one SVD of
``F`` (``z = U'y``), so each class costs O(min(N, D)) per iteration. ``log |A|`` counts the
``D - rank`` zero eigenvalues as ``log alpha`` each; the reference implementation's newer
fixed-point variant (``_fit_fixed_point`` in thuml/LogME) leaves them out when ``N < D``, so the
two agree when the features have full column rank (``N > D``), and differ by
``(D - rank)/2N log alpha`` otherwise.

**Linear probe**: multinomial logistic regression on standardised features (L2 penalty
``|W|^2 / 2`` beside the summed cross-entropy, scikit-learn's ``C=1``), fitted by L-BFGS in
float64; accuracy over ``folds`` stratified folds (seeded), averaged.

**Kendall's tau-b** between two score lists over the same candidates (ties counted as
scipy's ``kendalltau`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

MAX_ITERATIONS = 100
TOLERANCE = 1e-10


def log_evidence(
    sigma: Array, z: Array, rest: float, n: int, d: int, alpha: float, beta: float
) -> tuple[float, float, float, float]:
    """(L, gamma, m'm, |Fm - y|^2) at (alpha, beta), from the eigenvalues ``sigma`` of F'F
    (the nonzero ones), ``z = U'y`` and ``rest = |y|^2 - |z|^2``."""
    t = alpha / beta
    gamma = float(np.sum(sigma / (sigma + t)))
    mm = float(np.sum(sigma * z**2 / (sigma + t) ** 2))
    residual = float(np.sum((t / (sigma + t)) ** 2 * z**2)) + rest
    log_det = float(np.sum(np.log(alpha + beta * sigma))) + (d - sigma.size) * math.log(alpha)
    evidence = (
        n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual - alpha / 2 * mm - log_det / 2
    )  # fmt: skip
    return evidence, gamma, mm, residual


def maximum_evidence(
    sigma: Array, z: Array, rest: float, n: int, d: int
) -> tuple[float, float, float]:
    """(max L, alpha, beta) for one target by the fixed-point iteration.

    With as many independent features as rows (``N <= D``) every target is fit exactly, and
    the evidence may grow as ``beta`` goes to infinity (no noise), where the iteration only
    creeps: the noise-free limit, maximised over ``alpha`` in closed form, is taken when it is
    higher (``beta`` is then ``inf``)."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        _, gamma, mm, residual = log_evidence(sigma, z, rest, n, d, alpha, beta)
        if mm <= 0 or residual <= 0 or n - gamma <= 0:
            break
        new_alpha, new_beta = gamma / mm, (n - gamma) / residual
        if not (0 < new_alpha < math.inf and 0 < new_beta < math.inf):
            break  # a degenerate step (features that separate nothing): keep the last point
        before, after = alpha / beta, new_alpha / new_beta
        alpha, beta = new_alpha, new_beta
        if abs(after - before) <= TOLERANCE * before:
            break
    best = log_evidence(sigma, z, rest, n, d, alpha, beta)[0], alpha, beta
    if sigma.size == n and rest <= 1e-12 * max(float(z @ z), 1e-300):
        # beta -> inf: y ~ N(0, F F'/alpha), L = -N/2 log 2pi - 1/2 sum log(sigma/alpha)
        # - alpha/2 sum z^2/sigma, highest at alpha = N / sum z^2/sigma
        spread = float(np.sum(z**2 / sigma))
        if spread > 0:
            top = n / spread
            limit = (-n / 2 * math.log(2 * math.pi) - float(np.sum(np.log(sigma))) / 2
                     + n / 2 * math.log(top) - n / 2)  # fmt: skip
            if limit > best[0]:
                return limit, top, math.inf
    return best


def logme(features: Array, labels: Array) -> float:
    """LogME of ``features`` (N x D) for class ``labels`` (N integers): the mean over the
    classes present of the maximum log evidence per example. Higher is better."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],) or f.shape[0] < 2:
        raise ValueError("LogME needs features (N x D, N >= 2) and one label per row")
    if not np.isfinite(f).all():
        raise ValueError("LogME: the features hold NaN or infinite values")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], s[keep] ** 2
    scores = []
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        z = u.T @ target
        rest = max(float(target @ target - z @ z), 0.0)
        scores.append(maximum_evidence(sigma, z, rest, n, d)[0] / n)
    return float(np.mean(scores))


# ---- the linear probe -----------------------------------------------------------------------


def stratified_folds(labels: Array, folds: int, seed: int) -> list[Array]:
    """Row indices of each fold: every class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        for i, row in enumerate(rows):
            parts[(offset + i) % folds].append(int(row))
        offset += len(rows)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def fit_logistic(features: Array, labels: Array, classes: int, c: float = 1.0) -> Any:
    """(weights D x K, bias K) of a multinomial logistic regression, L-BFGS in float64."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    weights = torch.zeros((x.shape[1], classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weights, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> Any:
        optimizer.zero_grad()
        logits = x @ weights + bias
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        loss = loss + (weights**2).sum() / (2 * c)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return weights.detach().numpy(), bias.detach().numpy()


def probe_accuracy(features: Array, labels: Array, *, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a linear probe over ``folds`` stratified folds (each fold scored by
    a probe fitted on the others, the features standardised on those)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    classes = int(y.max()) + 1
    folds = max(2, min(folds, int(np.bincount(y).max())))
    scores = []
    for part in stratified_folds(y, folds, seed):
        if not part.size:
            continue
        train = np.setdiff1d(np.arange(len(y)), part)
        mean, std = f[train].mean(axis=0), f[train].std(axis=0)
        std[std == 0] = 1.0
        weights, bias = fit_logistic((f[train] - mean) / std, y[train], classes)
        predicted = np.argmax(((f[part] - mean) / std) @ weights + bias, axis=1)
        scores.append(float(np.mean(predicted == y[part])))
    return float(np.mean(scores))


# ---- rank agreement -------------------------------------------------------------------------


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b of two score lists (None with fewer than two items or no untied
    pair in one of them)."""
    if len(a) != len(b):
        raise ValueError("kendall_tau: the lists differ in length")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    pairs_a = concordant + discordant + ties_b  # pairs untied in a
    pairs_b = concordant + discordant + ties_a
    if not pairs_a or not pairs_b:
        return None
    return (concordant - discordant) / math.sqrt(pairs_a * pairs_b)
