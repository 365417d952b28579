"""LogME against a brute-force evidence and the reference implementation's numbers; Kendall's
tau against scipy; the linear probe on separable and on random features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fmforge.training.transferability import (
    kendall_tau,
    log_evidence,
    logme,
    maximum_evidence,
    probe_accuracy,
    stratified_folds,
)

scipy_stats = pytest.importorskip("scipy.stats")
scipy_optimize = pytest.importorskip("scipy.optimize")


def task(seed: int, n: int, d: int, classes: int, signal: float) -> tuple[Any, Any]:
    """Gaussian classes: features = the class mean (scaled by ``signal``) + unit noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, d)) * signal
    return means[y] + rng.normal(size=(n, d)), y


def brute_evidence(f: Any, y: Any, alpha: float, beta: float) -> float:
    """log N(y; 0, I/beta + F F'/alpha): the evidence with the weights integrated out."""
    n = f.shape[0]
    cov = np.eye(n) / beta + f @ f.T / alpha
    return float(scipy_stats.multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y))


def eigen(f: Any, y: Any) -> tuple[Any, Any, float]:
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > 1e-10 * s.max()
    z = u[:, keep].T @ y
    return s[keep] ** 2, z, float(y @ y - z @ z)


@pytest.mark.parametrize(("n", "d"), [(40, 6), (12, 30)])
def test_the_evidence_formula_is_the_marginal_likelihood(n: int, d: int) -> None:
    f, labels = task(7, n, d, 2, 1.0)
    y = (labels == 1).astype(float)
    sigma, z, rest = eigen(f, y)
    for alpha, beta in [(1.0, 1.0), (0.3, 4.0), (20.0, 0.5)]:
        ours = log_evidence(sigma, z, rest, n, d, alpha, beta)[0]
        assert ours == pytest.approx(brute_evidence(f, y, alpha, beta), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("n", "d"), [(60, 5), (15, 25)])
def test_the_fixed_point_is_the_maximum_evidence(n: int, d: int) -> None:
    f, labels = task(3, n, d, 2, 0.8)
    y = (labels == 0).astype(float)
    sigma, z, rest = eigen(f, y)
    best, alpha, beta = maximum_evidence(sigma, z, rest, n, d)
    found = scipy_optimize.minimize(
        lambda p: -brute_evidence(f, y, math.exp(p[0]), math.exp(p[1])),
        x0=[0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12},
    )  # fmt: skip
    assert best == pytest.approx(-found.fun, abs=1e-7)
    assert best >= -found.fun - 1e-9  # nothing the optimizer finds beats the fixed point
    assert best == pytest.approx(brute_evidence(f, y, alpha, beta), abs=1e-9)


# thuml/LogME (commit 3a08950, LogME.py) run on these tasks: ``LogME().fit(f, y)`` (its
# fixed-point variant) and ``_fit_icml`` (the ICML 2021 algorithm, which stops once alpha/beta
# moves by under 1% and adds 1e-5 to denominators).
REFERENCE = [
    # (seed, n, d, classes, signal), fixed point, ICML
    ((0, 200, 16, 2, 1.0), -0.14459289374985176, -0.14460011930573202),
    ((1, 300, 32, 3, 0.5), -0.4007274632151902, -0.4007347627946511),
    ((2, 150, 8, 5, 2.0), 0.05860521362450085, 0.058595514620463286),
    ((3, 400, 64, 2, 0.1), -1.0203515393134173, -1.0203607879046834),
]


@pytest.mark.parametrize(("shape", "fixed_point", "icml"), REFERENCE)
def test_logme_matches_the_reference_implementation(
    shape: tuple[int, int, int, int, float], fixed_point: float, icml: float
) -> None:
    f, y = task(*shape)
    ours = logme(f, y)
    assert ours == pytest.approx(fixed_point, rel=1e-7)
    assert ours == pytest.approx(icml, abs=2e-5)


def test_fewer_rows_than_features_counts_every_zero_eigenvalue() -> None:
    """Where the reference's fixed-point variant leaves the ``D - N`` zero eigenvalues out of
    log |A| (it gives 3.0112 here), the ICML algorithm and ours count them."""
    f, y = task(4, 60, 100, 3, 1.0)
    assert logme(f, y) == pytest.approx(0.3593090456151404, abs=1e-3)


def test_logme_prefers_features_that_separate_the_classes() -> None:
    good, y = task(5, 200, 16, 2, 2.0)
    noise = np.random.default_rng(9).normal(size=good.shape)
    assert logme(good, y) > logme(noise, y) + 0.1
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_is_scipys_tau_b(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 7).astype(float)  # ties included
    b = rng.integers(0, 4, 7).astype(float)
    expected = scipy_stats.kendalltau(a, b).statistic
    ours = kendall_tau(list(a), list(b))
    if math.isnan(expected):
        assert ours is None
    else:
        assert ours == pytest.approx(expected)
    assert kendall_tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == 1.0
    assert kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    assert kendall_tau([1.0], [2.0]) is None


def test_the_probe_separates_what_is_separable_and_not_noise() -> None:
    good, y = task(11, 120, 8, 3, 3.0)
    noise = np.random.default_rng(2).normal(size=good.shape)
    assert probe_accuracy(good, y, folds=5) > 0.95
    assert probe_accuracy(noise, y, folds=5) < 0.6
    assert probe_accuracy(good, y, folds=5) == probe_accuracy(good, y, folds=5)  # seeded
    parts = stratified_folds(y, 4, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    for part in parts:  # every class in every fold, within one row of an even share
        counts = np.bincount(y[part], minlength=3)
        assert (np.abs(counts - np.bincount(y) / 4) <= 1).all()


def test_logme_is_finite_where_the_fixed_point_steps_off_to_infinity() -> None:
    """Features that nearly encode the labels, at scales far apart: one of these drove the
    iteration to an infinite precision and a NaN evidence before the degenerate step was
    refused (a ``ModelSelected`` event cannot hold a NaN)."""
    rng = np.random.default_rng(0)
    for _ in range(90):
        n, d = int(rng.integers(20, 200)), int(rng.integers(2, 400))
        labels = rng.integers(0, int(rng.integers(2, 6)), n)
        features = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-8, 3)
        k = min(d, int(labels.max()) + 1)
        features[:, :k] += np.eye(int(labels.max()) + 1)[labels][:, :k] * rng.choice([1, 100, 1e4])
        with np.errstate(all="ignore"):
            assert math.isfinite(logme(features, labels))
