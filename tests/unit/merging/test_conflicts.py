"""The conflict statistics against a brute-force count, coordinate by coordinate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmforge.merging.conflicts import TensorStats, most_conflicted, summarize


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [0.5, -1.0, 2.0]])
def test_statistics_equal_a_brute_force_count(weights: list[float]) -> None:
    rng = np.random.default_rng(0)
    deltas = rng.standard_normal((3, 50, 7))
    kept = deltas * (rng.random((3, 50, 7)) < 0.4)  # trimmed: most entries dropped
    stats = TensorStats(3)
    w = torch.tensor(weights, dtype=torch.float64).reshape(-1, 1, 1)
    for start in range(0, 50, 13):  # batches of rows
        stats.add(torch.from_numpy(deltas[:, start : start + 13]),
                  torch.from_numpy(kept[:, start : start + 13]), w)  # fmt: skip
    record = stats.record("t", (50, 7))
    flat, kflat = deltas.reshape(3, -1), kept.reshape(3, -1)
    norms = np.linalg.norm(flat, axis=1)
    assert record["norms"] == pytest.approx(norms, rel=1e-5)
    cosine = flat @ flat.T / np.outer(norms, norms)
    assert np.allclose(np.array(record["cosine"], dtype=float), cosine, atol=1e-5)
    overlap = disagree = 0
    mass, dropped = np.zeros(3), np.zeros(3)
    for j in range(kflat.shape[1]):
        column = kflat[:, j]
        nonzero = column != 0
        if nonzero.sum() >= 2:
            overlap += 1
            if (column[nonzero] > 0).any() and (column[nonzero] < 0).any():
                disagree += 1
        weighted = column * np.array(weights)
        elected = 1.0 if weighted.sum() >= 0 else -1.0
        mass += np.abs(weighted)
        dropped += np.where(nonzero & (np.sign(weighted) != elected), np.abs(weighted), 0)
    assert record["overlap"] == pytest.approx(overlap / 350, rel=1e-5)
    assert record["sign_conflict"] == pytest.approx(disagree / overlap, rel=1e-5)
    assert record["kept"] == pytest.approx(list((kflat != 0).mean(axis=1)), rel=1e-5)
    assert record["dropped"] == pytest.approx(list(dropped / mass), rel=1e-5, abs=1e-9)
    assert record["conflict"] == pytest.approx(float(np.mean(dropped / mass)), rel=1e-5)


def test_summary_and_ranking() -> None:
    records = [
        {"name": "a", "shape": [10], "overlap": 0.5, "sign_conflict": 0.2, "conflict": 0.1},
        {"name": "b", "shape": [30], "overlap": 0.1, "sign_conflict": 1.0, "conflict": 0.4},
    ]
    summary = summarize(records, unchanged=3)
    assert summary["changed"] == 2
    assert summary["unchanged"] == 3
    assert summary["overlap"] == pytest.approx((5 + 3) / 40)
    assert summary["sign_conflict"] == pytest.approx((0.2 * 5 + 1.0 * 3) / 8)
    assert summary["conflict"] == pytest.approx((1 + 12) / 40)
    assert [r["name"] for r in most_conflicted({"tensors": records}, 1)] == ["b"]


def test_large_tensors_are_sampled_every_eighth_row_with_exact_norms() -> None:
    rng = np.random.default_rng(1)
    deltas = torch.from_numpy(rng.standard_normal((2, 4000, 64)))
    deltas[1] = -0.5 * deltas[0] + 0.1 * deltas[1]  # mostly opposed
    w = torch.ones((2, 1, 1), dtype=torch.float64)
    sampled, exact = TensorStats.of(2, (4000, 64)), TensorStats(2)
    assert sampled.every == 8
    for start in range(0, 4000, 333):
        batch = deltas[:, start : start + 333]
        sampled.add(batch, batch, w, start)
        exact.add(batch, batch, w, start)
    a, b = sampled.record("t", (4000, 64)), exact.record("t", (4000, 64))
    assert sampled.numel == 500 * 64  # rows 0, 8, 16, ... whatever the batches
    assert a["norms"] == b["norms"]
    assert a["cosine"] == b["cosine"]
    assert a["sign_conflict"] == pytest.approx(b["sign_conflict"], abs=0.02)
    assert a["dropped"] == pytest.approx(b["dropped"], abs=0.02)
