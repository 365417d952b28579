"""Near-duplicate detection finds edited copies and leaves different texts alone."""

from __future__ import annotations

import numpy as np
import pytest

from fmforge.data.minhash import bands_for, near_duplicate_groups, signatures


def corpus(n: int, seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """Random texts, some of them copies of an earlier one with one word changed."""
    rng = np.random.default_rng(seed)
    vocab = [f"word{i}" for i in range(3000)]
    texts: list[str] = []
    copies: dict[int, int] = {}
    for i in range(n):
        if i > 10 and rng.random() < 0.2:
            source = int(rng.integers(0, i))
            while source in copies:
                source = copies[source]
            words = texts[source].split()
            words[int(rng.integers(0, len(words)))] = "changed"
            texts.append(" ".join(words))
            copies[i] = source
        else:
            texts.append(" ".join(rng.choice(vocab, int(rng.integers(30, 60)))))
    return texts, copies


def test_edited_copies_are_found_and_distinct_texts_are_not_merged() -> None:
    texts, copies = corpus(3000)
    groups = near_duplicate_groups(texts, threshold=0.8)
    flagged = {i for i, first in enumerate(groups) if first != i}
    found = sum(1 for i in copies if i in flagged)
    assert found / len(copies) > 0.9
    assert flagged <= set(copies)  # no original is ever dropped as a duplicate
    for i in flagged:
        assert groups[i] < i  # each cluster keeps its first row


def test_signatures_estimate_jaccard_and_are_deterministic() -> None:
    a = "the quick brown fox jumps over the lazy dog " * 3
    b = a.replace("lazy", "sleepy")
    sig = signatures([a, b, "something else entirely, nothing alike"], permutations=256)
    assert np.array_equal(sig, signatures([a, b, "something else entirely, nothing alike"],
                                          permutations=256))  # fmt: skip
    assert np.mean(sig[0] == sig[1]) > 0.6
    assert np.mean(sig[0] == sig[2]) < 0.1
    assert near_duplicate_groups(["", "", "x"]).tolist() == [0, 0, 2]  # empty texts are equal


def test_bands_put_the_threshold_near_the_s_curve_midpoint() -> None:
    bands, rows = bands_for(0.8, 64)
    assert bands * rows == 64
    assert abs((1 / bands) ** (1 / rows) - 0.8) < 0.05
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_groups(["a", "b"], threshold=0)
