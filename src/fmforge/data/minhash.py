"""Near-duplicate detection: MinHash signatures of character shingles, banded LSH, numpy only.

Texts are normalized (case, accents, punctuation folded) and cut into overlapping
``shingle``-character windows, hashed all at once with a rolling polynomial over the
concatenated bytes. Each of ``permutations`` hash functions (x -> a x + b mod 2^32, odd a) keeps
the minimum over a text's shingles: two texts agree on a signature entry with probability equal
to their Jaccard similarity. Signatures are cut into bands; texts sharing a whole band are
candidates, kept as pairs when their signatures agree on at least ``threshold`` of entries.
Clusters are joined transitively (union-find); each keeps its first row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fmforge.data.text import normalize

Array = np.ndarray[Any, Any]


def signatures(
    texts: Sequence[str], *, permutations: int = 64, shingle: int = 5, seed: int = 1
) -> Array:
    """(len(texts), permutations) uint32 MinHash signatures."""
    encoded = [normalize(t).encode() for t in texts]
    lengths = np.array([max(len(e), 1) for e in encoded])
    # One buffer; a text shorter than a shingle is one shingle of itself.
    data = np.frombuffer(
        b"".join(e if e else b" " for e in encoded) + bytes(shingle), dtype=np.uint8
    )  # zero-padded: a window never reads past the end
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    windows = np.maximum(lengths - shingle + 1, 1)
    width = np.minimum(lengths, shingle)
    # Shingle hashes: a polynomial over each window's bytes (uint32, wrapping).
    window_offsets = np.cumsum(windows) - windows  # each text's first window
    first = np.repeat(starts - window_offsets, windows) + np.arange(windows.sum())
    span = np.repeat(width, windows)
    short = bool(np.any(width < shingle))  # texts shorter than a shingle: mask past their end
    hashes = np.zeros(first.size, dtype=np.uint32)
    for offset in range(shingle):
        byte = data[first + offset].astype(np.uint32)
        if short:
            byte *= (offset < span).astype(np.uint32)
        hashes *= np.uint32(1_000_003)
        hashes += byte
    # Each "permutation" is x -> a x + b mod 2^32 with odd a (a bijection of 32-bit values).
    folded = hashes
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**32, permutations, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, permutations, dtype=np.uint64).astype(np.uint32)
    out = np.empty((len(texts), permutations), dtype=np.uint32)
    permuted = np.empty_like(folded)
    for p in range(permutations):
        np.multiply(folded, a[p], out=permuted)
        permuted += b[p]
        out[:, p] = np.minimum.reduceat(permuted, window_offsets)
    return out


def bands_for(threshold: float, permutations: int) -> tuple[int, int]:
    """(bands, rows) with bands x rows = permutations whose S-curve midpoint is nearest the
    threshold: pairs above it are candidates with high probability."""
    best = (1, permutations)
    for rows in range(1, permutations + 1):
        if permutations % rows:
            continue
        bands = permutations // rows
        if abs((1 / bands) ** (1 / rows) - threshold) < abs(
            (1 / best[0]) ** (1 / best[1]) - threshold
        ):
            best = (bands, rows)
    return best


def near_duplicate_groups(
    texts: Sequence[str], *, threshold: float = 0.8, permutations: int = 64, shingle: int = 5
) -> Array:
    """For each text, the index of the first text of its near-duplicate cluster (itself when
    it has none earlier)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    n = len(texts)
    parent = np.arange(n)
    if n < 2:
        return parent
    signature = signatures(texts, permutations=permutations, shingle=shingle)
    bands, rows = bands_for(threshold, permutations)
    weights = np.random.default_rng(7).integers(1, 2**63, rows, dtype=np.uint64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for band in range(bands):
        block = signature[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = (block * weights).sum(axis=1)  # a hash of the band (wrapping)
        order = np.argsort(keys, kind="stable")
        same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        if same.size == 0:
            continue
        left, right = order[same], order[same + 1]  # neighbours in a bucket: a chain per bucket
        agree = (signature[left] == signature[right]).mean(axis=1) >= threshold
        for i, j in zip(left[agree].tolist(), right[agree].tolist(), strict=True):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)])
