"""Data cleaning: near-duplicate removal throughput, and label-issue review on YouTube.

    python benchmarks/data.py            # needs ../shared/data for the label-issue rows
    python benchmarks/data.py --quick    # 20k texts, TF-IDF features only

Near-duplicates: 50,000 synthetic comments (random words, 8-40 each), 10% of them copies of an
earlier one with one word changed, through ``near_duplicate_groups`` (MinHash, 64 permutations,
character 5-shingles, LSH at Jaccard 0.8) with numpy held to one thread; beside it, the
``datasketch`` package's ``MinHash`` + ``MinHashLSH`` on the same texts and shingles, where
installed (``pip install datasketch``, benchmark environment only).

Label issues: every WRENCH YouTube comment (train, valid, test: 1,956) with 10% of the gold
labels flipped at random; ``find_issues`` flags rows (confident learning on 5-fold
probabilities), scored against the flipped rows. Beside it, cleanlab's default filter
(``prune_by_noise_rate``) on the same probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Row, print_table
from fmforge.data.minhash import near_duplicate_groups
from fmforge.data.text import normalize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_comments(n: int, seed: int = 0) -> tuple[list[str], set[int]]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)]
    texts: list[str] = []
    copies: set[int] = set()
    for i in range(n):
        if i > 100 and rng.random() < 0.1:
            words = texts[int(rng.integers(0, i))].split()
            words[int(rng.integers(0, len(words)))] = "edited"
            texts.append(" ".join(words))
            copies.add(i)
        else:
            texts.append(" ".join(rng.choice(vocab, int(rng.integers(8, 40)))))
    return texts, copies


def dedup_rows(n: int) -> list[Row]:
    texts, copies = synthetic_comments(n)
    with threadpool_limits(1):
        near_duplicate_groups(texts[:200])
        began = time.perf_counter()
        groups = near_duplicate_groups(texts, threshold=0.8)
        ours = time.perf_counter() - began
    dropped = {i for i, first in enumerate(groups) if first != i}
    recall = len(dropped & copies) / len(copies)
    baseline, base_rate = "", None
    measured = _datasketch(texts)
    if measured is not None:
        base_rate = n / measured
        baseline = f"datasketch {base_rate:,.0f} rows/s"
    return [
        Row(f"near-duplicate removal, {n:,} comments, one core (found {recall:.0%} of the "
            f"planted copies, {len(dropped - copies)} others)",
            f"{n / ours:,.0f} rows/s", baseline,
            None if base_rate is None else (n / ours) / base_rate, ">= 20,000 rows/s",
            n / ours >= 20_000),
    ]  # fmt: skip


def _datasketch(texts: list[str]) -> float | None:
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    began = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=64)
    for i, text in enumerate(texts):
        folded = normalize(text)
        shingles = {folded[j : j + 5] for j in range(max(1, len(folded) - 4))}
        signature = MinHash(num_perm=64)
        signature.update_batch([s.encode() for s in shingles])
        lsh.query(signature)
        lsh.insert(str(i), signature)
    return time.perf_counter() - began


def issue_rows(features: list[str]) -> list[Row]:
    from cleanlab.filter import find_label_issues

    from fmforge.data.issues import out_of_sample_probabilities

    rows: list[dict[str, Any]] = []
    for split in ("train", "valid", "test"):
        rows += json.loads((DATA / "wrench_youtube" / f"{split}.json").read_text()).values()
    texts = [r["data"]["text"] for r in rows]
    gold = np.array([r["label"] for r in rows])
    flip = np.random.default_rng(0).random(gold.size) < 0.10
    noisy = np.where(flip, 1 - gold, gold)
    out = []
    for kind in features:
        began = time.perf_counter()
        proba = out_of_sample_probabilities(texts, noisy, features=kind, folds=5, seed=0)
        ours = find_label_issues(noisy, proba, filter_by="confident_learning")
        seconds = time.perf_counter() - began
        default = find_label_issues(noisy, proba)
        precision, recall = _scores(ours, flip)
        base_p, base_r = _scores(default, flip)
        out.append(
            Row(f"label-issue review, YouTube 10% flipped, {kind} features ({seconds:.0f} s)",
                f"precision {precision:.3f}, recall {recall:.3f}",
                f"cleanlab default filter: {base_p:.3f}, {base_r:.3f}", None,
                "precision >= 0.85 at recall >= 0.75", precision >= 0.85 and recall >= 0.75)
        )  # fmt: skip
    return out


def _scores(flagged: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]) -> tuple[float, float]:
    hits = float(np.sum(flagged & truth))
    return hits / max(float(flagged.sum()), 1.0), hits / float(truth.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = dedup_rows(20_000 if args.quick else 50_000)
    if (DATA / "wrench_youtube").is_dir():
        rows += issue_rows(["tfidf"] if args.quick else ["tfidf", "tfidf+minilm"])
    else:
        print(f"no WRENCH data at {DATA}: the label-issue rows are skipped")
    print_table("Data cleaning", rows)


if __name__ == "__main__":
    main()
