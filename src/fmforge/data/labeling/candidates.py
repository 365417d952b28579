"""Candidate labeling functions for ``synth``, generated from a set of labelled examples.

Each generator reads a ``Pool`` (the labelled examples of one fold, or all of them) and the
fixed ``Context`` (the vocabulary of the unlabelled rows, the MiniLM embeddings of the intent,
the class names, the vocabulary and the examples) and returns ``Candidate``s: a YAML entry of
one of the declarative kinds, with a ``key`` that names the same heuristic in every fold (a
keyword, a stump's feature and direction, a class's exemplars) so its out-of-fold votes can be
collected from the folds that did not see the example.

- ``keywords`` / ``bigrams``: words and word pairs found in two or more examples of a class,
  mostly of that class (the measured sketch: 28 LFs from 50 YouTube comments).
- ``stems``: a regex ``\\bSTEM\\w*`` for words of the unlabelled rows sharing a 6-letter start
  (DataSculpt's ``subscrib``), checked like keywords; each pattern must pass
  ``backtracking_risk``.
- ``intent``: vocabulary terms whose embedding is nearest the intent (voting the class whose
  examples the intent is nearest) or a class name (voting that class), kept when the examples
  they fire on do not say otherwise.
- ``stumps``: Snuba's decision stumps on the text's numeric features (and numeric columns the
  caller names), one per feature, direction and class, the cut chosen on the examples.
- ``exemplars``: per class, its examples as exemplars, the similarity threshold fitted by
  leave-one-out precision on the examples.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmforge.data.labeling.kinds import FEATURES
from fmforge.data.userinput import backtracking_risk

Array = np.ndarray[Any, Any]
_TOKEN = re.compile(r"\w+")
MIN_SUPPORT = 2  # examples a mined keyword must fire on
MIN_PRECISION = 0.6  # smoothed, on the pool, for a mined candidate to be kept
PER_CLASS = 40  # mined candidates kept per class and generator
INTENT_TERMS = 25  # intent-seeded terms per class
STEM_CHARS = 6
EXEMPLAR_PRECISION = 0.85  # leave-one-out, smoothed


@dataclass(frozen=True)
class Candidate:
    key: tuple[str, ...]  # the same heuristic in every fold
    generator: str
    entry: dict[str, Any]  # the YAML entry, name included
    label: int


@dataclass
class Pool:
    """Labelled examples: texts, class indices, their rows (dicts), tokens, embeddings."""

    texts: list[str]
    y: Array
    rows: list[dict[str, Any]]
    embedded: Array
    tokens: list[set[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tokens:
            self.tokens = [terms(t) for t in self.texts]

    def subset(self, index: Array) -> Pool:
        return Pool(
            [self.texts[i] for i in index], self.y[index], [self.rows[i] for i in index],
            self.embedded[index], [self.tokens[i] for i in index],
        )  # fmt: skip


@dataclass
class Context:
    """What every fold shares: the classes, the column, the intent, the vocabulary."""

    labels: tuple[str, ...]
    column: str
    numeric_columns: tuple[str, ...]
    vocabulary: list[str]  # words of the unlabelled rows, most frequent first
    vocabulary_embedded: Array
    intent_embedded: Array  # (384,)
    names_embedded: Array  # (k, 384)
    stems: dict[str, list[str]]  # a 6-letter start -> the vocabulary words that have it
    generators: tuple[str, ...]  # which of GENERATORS run

    @property
    def k(self) -> int:
        return len(self.labels)


def terms(text: str) -> set[str]:
    """Lower-cased words and the pairs of adjacent words one space apart, as keyword LFs see
    them (``\\bw1 w2\\b``)."""
    lowered = text.lower()
    found = list(_TOKEN.finditer(lowered))
    out = {m.group() for m in found}
    for a, b in itertools.pairwise(found):
        if lowered[a.end() : b.start()] == " ":
            out.add(f"{a.group()} {b.group()}")
    return out


def slug(text: str) -> str:
    """A name-safe form of a word or label: ASCII letters, digits and underscores."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return cleaned[:40] or "x"


def smoothed(correct: float, fired: float) -> float:
    """Laplace-smoothed precision: (correct + 1) / (fired + 2)."""
    return (correct + 1.0) / (fired + 2.0)


def generate(pool: Pool, ctx: Context) -> list[Candidate]:
    """The candidates of the context's generators on ``pool``, in a fixed order."""
    out: list[Candidate] = []
    for name, make in GENERATORS.items():
        if name in ctx.generators:
            out.extend(make(pool, ctx))
    return out


def _class_counts(pool: Pool, ctx: Context, fires: Callable[[set[str], str], bool],
                  term: str) -> Array:  # fmt: skip
    counts = np.zeros(ctx.k)
    for tokens, label in zip(pool.tokens, pool.y, strict=True):
        if fires(tokens, term):
            counts[label] += 1
    return counts


def _mined(pool: Pool, ctx: Context) -> list[Candidate]:
    """Keywords and bigrams found in MIN_SUPPORT or more examples, mostly of one class."""
    counts: dict[str, Array] = {}
    for tokens, label in zip(pool.tokens, pool.y, strict=True):
        for term in tokens:
            if len(term) < 2 or term.isdigit():
                continue
            counts.setdefault(term, np.zeros(ctx.k))[label] += 1
    out = []
    for c in range(ctx.k):
        ranked = []
        for term, per_class in counts.items():
            support, total = per_class[c], per_class.sum()
            if support >= MIN_SUPPORT and per_class.argmax() == c:
                precision = smoothed(support, total)
                if precision >= MIN_PRECISION:
                    ranked.append((-precision, -support, term))
        ranked.sort()
        for _, _, term in ranked[:PER_CLASS]:
            bigram = " " in term
            name = f"{'bg' if bigram else 'kw'}_{slug(ctx.labels[c])}_{slug(term)}"
            entry = {"name": name, "keywords": [term], "label": ctx.labels[c]}
            out.append(Candidate(("kw", term), "bigrams" if bigram else "keywords", entry, c))
    return out


def _stems(pool: Pool, ctx: Context) -> list[Candidate]:
    """``\\bSTEM\\w*`` for a 6-letter start shared by two or more vocabulary words."""
    out = []
    for stem, words in sorted(ctx.stems.items()):
        per_class = _class_counts(
            pool, ctx, lambda tokens, s: any(t.startswith(s) for t in tokens if " " not in t), stem
        )
        c = int(per_class.argmax())
        support, total = per_class[c], per_class.sum()
        if support < MIN_SUPPORT or smoothed(support, total) < MIN_PRECISION:
            continue
        fired_words = {t for tokens in pool.tokens for t in tokens if t.startswith(stem)}
        if len(fired_words & set(words)) < 2:  # one word: the keyword generator has it
            continue
        pattern = rf"\b{re.escape(stem)}\w*"
        if backtracking_risk(pattern) is not None:
            continue
        entry = {"name": f"re_{slug(ctx.labels[c])}_{slug(stem)}", "regex": pattern,
                 "label": ctx.labels[c]}  # fmt: skip
        out.append(Candidate(("stem", stem), "stems", entry, c))
    return out


def _intent(pool: Pool, ctx: Context) -> list[Candidate]:
    """Vocabulary terms nearest the intent or a class name, unless the examples disagree."""
    if not ctx.vocabulary:
        return []
    centroids = np.stack(
        [pool.embedded[pool.y == c].mean(axis=0) if np.any(pool.y == c) else np.zeros(384)
         for c in range(ctx.k)]
    )  # fmt: skip
    intent_class = int(np.argmax(centroids @ ctx.intent_embedded))
    to_intent = ctx.vocabulary_embedded @ ctx.intent_embedded
    to_names = ctx.vocabulary_embedded @ ctx.names_embedded.T
    out = []
    for c in range(ctx.k):
        score = to_names[:, c].copy()
        if c == intent_class:
            score = np.maximum(score, to_intent)
        for index in np.argsort(-score, kind="stable")[:INTENT_TERMS]:
            term = ctx.vocabulary[index]
            per_class = _class_counts(pool, ctx, lambda tokens, t: t in tokens, term)
            if per_class.sum() and per_class.argmax() != c:
                continue  # the examples say otherwise
            entry = {"name": f"kw_{slug(ctx.labels[c])}_{slug(term)}", "keywords": [term],
                     "label": ctx.labels[c]}  # fmt: skip
            out.append(Candidate(("kw", term), "intent", entry, c))
    return out


def feature_values(rows: Sequence[dict[str, Any]], ctx: Context) -> tuple[list[str], Array]:
    """(names, rows x features) of the text features and numeric columns; NaN where a value
    is missing."""
    names = [f"{ctx.column}:{f}" for f in FEATURES] + list(ctx.numeric_columns)
    values = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        text = row.get(ctx.column)
        text = "" if text is None else str(text)
        for j, feature in enumerate(FEATURES.values()):
            values[i, j] = feature(text)
        for j, column in enumerate(ctx.numeric_columns, len(FEATURES)):
            value = row.get(column)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[i, j] = float(value)
    return names, values


def _cut(value: float) -> float:
    return float(f"{value:.4g}")


def _stumps(pool: Pool, ctx: Context) -> list[Candidate]:
    """Per feature, direction and class, the cut with the best smoothed precision times
    log(support), from midpoints between the examples' values."""
    names, values = feature_values(pool.rows, ctx)
    out = []
    for j, name in enumerate(names):
        column = values[:, j]
        known = ~np.isnan(column)
        distinct = np.unique(column[known])
        if distinct.size < 2:
            continue
        cuts = sorted({_cut(v) for v in (distinct[:-1] + distinct[1:]) / 2})
        if len(cuts) > 24:
            cuts = [cuts[i] for i in np.linspace(0, len(cuts) - 1, 24).round().astype(int)]
        for direction in ("min", "max"):
            for c in range(ctx.k):
                best: tuple[float, float] | None = None
                for cut in cuts:
                    fires = known & ((column >= cut) if direction == "min" else (column <= cut))
                    support = float(np.sum(fires & (pool.y == c)))
                    if support < 3:
                        continue
                    precision = smoothed(support, float(fires.sum()))
                    if precision < 0.7:
                        continue
                    score = precision * math.log1p(support)
                    if best is None or score > best[0] + 1e-12:
                        best = (score, cut)
                if best is None:
                    continue
                feature = name.split(":", 1)[1] if ":" in name else None
                entry: dict[str, Any] = {
                    "name": f"th_{slug(ctx.labels[c])}_{slug(feature or name)}_{direction}",
                }
                if feature is None:
                    entry["column"] = name
                else:
                    entry["feature"] = feature
                entry[direction] = best[1]
                entry["label"] = ctx.labels[c]
                out.append(Candidate(("stump", name, direction, str(c)), "stumps", entry, c))
    return out


def _exemplars(pool: Pool, ctx: Context) -> list[Candidate]:
    """Per class: its examples as exemplars, voting it when a row is similar enough; the
    threshold is the lowest whose leave-one-out smoothed precision reaches 0.85."""
    out = []
    similarity = pool.embedded @ pool.embedded.T
    np.fill_diagonal(similarity, -np.inf)
    for c in range(ctx.k):
        mine = np.flatnonzero(pool.y == c)
        if mine.size < 2:
            continue
        nearest = similarity[:, mine].max(axis=1)  # leave-one-out for the class's own
        chosen = None
        for threshold in np.round(np.arange(0.30, 0.951, 0.01), 2):
            fires = nearest >= threshold
            right = float(np.sum(fires & (pool.y == c)))
            if right >= 3 and smoothed(right, float(fires.sum())) >= EXEMPLAR_PRECISION:
                chosen = float(threshold)
                break
        if chosen is None:
            continue
        texts = sorted({pool.texts[i] for i in mine})
        entry = {"name": f"ex_{slug(ctx.labels[c])}", "exemplars": {ctx.labels[c]: texts},
                 "threshold": chosen, "label": ctx.labels[c]}  # fmt: skip
        out.append(Candidate(("exemplar", str(c)), "exemplars", entry, c))
    return out


def vocabulary(texts: Sequence[str], limit: int = 1000) -> tuple[list[str], dict[str, list[str]]]:
    """(words found in three or more texts, most frequent first, at most ``limit``; 6-letter
    starts shared by two or more of them)."""
    frequency: Counter[str] = Counter()
    for text in texts:
        frequency.update({m.group() for m in _TOKEN.finditer(text.lower())})
    words = [w for w, n in sorted(frequency.items(), key=lambda x: (-x[1], x[0]))
             if n >= 3 and len(w) >= 3 and not w.isdigit()][:limit]  # fmt: skip
    stems: dict[str, list[str]] = {}
    for word in words:
        if len(word) > STEM_CHARS and word.isalpha():
            stems.setdefault(word[:STEM_CHARS], []).append(word)
    return words, {s: sorted(w) for s, w in stems.items() if len(w) >= 2}


GENERATORS: dict[str, Callable[[Pool, Context], list[Candidate]]] = {
    "keywords": _mined,
    "stems": _stems,
    "intent": _intent,
    "stumps": _stumps,
    "exemplars": _exemplars,
}
"""Every generator, in the order they run (a key found by two keeps the first's)."""
