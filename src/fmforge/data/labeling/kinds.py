"""The declarative labeling-function kinds a YAML LF file may use, in one registry.

Each kind is named by the field that gives it (``keywords``, ``regex``, ``exemplars``, ``min``
/``max`` for ``threshold``, ``default``) and implemented here as a small callable of one row
(a dict). None of them runs text from the file as code: keywords are escaped into one regex of
alternatives, a user's regex runs through ``UserPattern`` (time-limited), exemplars compare
MiniLM embeddings, thresholds compare a number, and the default rule only looks at the other
LFs' votes.

- ``threshold``: votes its label when a numeric column (or a ``feature`` computed from a text
  column: length, word count, shares of digits, capitals or non-ASCII characters, links) lies
  in ``[min, max]``; a missing or non-numeric value abstains. The stumps of Snuba (Varma and
  Ré, VLDB 2018) are of this kind.
- ``default``: votes its label on every row no other LF votes on. It runs last, after every
  other LF of the set, so its version includes theirs (``bind_default``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray[Any, Any]]

_WORD = re.compile(r"\w+")
_LINK = re.compile(r"https?://|www\.|\[url\]", re.IGNORECASE)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _share(text: str, test: Callable[[str], bool]) -> float:
    return sum(1 for c in text if test(c)) / len(text) if text else 0.0


def _capitals(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if c.isupper()) / len(letters) if letters else 0.0


FEATURES: dict[str, Callable[[str], float]] = {
    "chars": lambda t: float(len(t)),
    "words": lambda t: float(len(_WORD.findall(t))),
    "digits": lambda t: _share(t, str.isdigit),
    "capitals": _capitals,
    "non_ascii": lambda t: _share(t, lambda c: ord(c) > 127),
    "links": lambda t: float(len(_LINK.findall(t))),
}
"""Numbers a ``threshold`` LF may compute from a text column (``feature``)."""


class Keywords:
    """Fires on any of ``words`` as a whole word, case-blind."""

    def __init__(self, column: str, words: Sequence[str], label: str) -> None:
        self.column, self.label = column, label
        self.pattern = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE
        )

    def __call__(self, row: dict[str, Any]) -> str | None:
        return self.label if self.pattern.search(_text(row.get(self.column))) else None


class Regex:
    """Fires when a user's regex (a ``UserPattern``: size-limited, time-limited) matches."""

    def __init__(self, column: str, pattern: Any, label: str) -> None:
        self.column, self.label, self.pattern = column, label, pattern

    def __call__(self, row: dict[str, Any]) -> str | None:
        return self.label if self.pattern.search(_text(row.get(self.column))) else None


class Exemplars:
    """Votes the class of the most similar exemplar text (MiniLM cosine similarity) when the
    similarity reaches ``threshold``. Rows are embedded in batches (``vote_many``) by ``embed``
    when given (a cache), else one text at a time."""

    uses_embeddings = True

    def __init__(self, column: str, exemplars: dict[str, list[str]], threshold: float) -> None:
        self.column, self.threshold = column, threshold
        self.classes = [label for label, texts in exemplars.items() for _ in texts]
        self.texts = [text for texts in exemplars.values() for text in texts]

    def vote_many(self, rows: list[dict[str, Any]], embed: Embed | None = None) -> list[str | None]:
        if embed is None:
            from fmforge.embeddings import embed_each

            embed = embed_each
        texts = [_text(row.get(self.column)) for row in rows]
        return self.votes(embed(texts), embed(self.texts))

    def votes(
        self, embedded: np.ndarray[Any, Any], exemplars: np.ndarray[Any, Any]
    ) -> list[str | None]:
        """Votes of rows already embedded, given the exemplars' embeddings."""
        similarity = embedded @ exemplars.T
        best = similarity.argmax(axis=1)
        return [
            self.classes[b] if similarity[i, b] >= self.threshold else None
            for i, b in enumerate(best)
        ]

    def __call__(self, row: dict[str, Any]) -> str | None:
        return self.vote_many([row])[0]


class Threshold:
    """Fires when the column's number (or the text ``feature``'s) lies in ``[low, high]``."""

    def __init__(
        self, column: str, label: str, low: float | None, high: float | None, feature: str | None
    ) -> None:
        self.column, self.label, self.low, self.high = column, label, low, high
        self.feature = FEATURES[feature] if feature is not None else None

    def value(self, row: dict[str, Any]) -> float | None:
        raw = row.get(self.column)
        if self.feature is not None:
            return self.feature(_text(raw))
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        number = float(raw)
        return None if math.isnan(number) else number

    def __call__(self, row: dict[str, Any]) -> str | None:
        value = self.value(row)
        if value is None:
            return None
        if self.low is not None and value < self.low:
            return None
        if self.high is not None and value > self.high:
            return None
        return self.label


class Default:
    """Votes ``label`` where no other LF of the set votes: computed from their votes, last."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, row: dict[str, Any]) -> str | None:
        raise TypeError("a default LF votes from the other LFs' votes (see apply_lfs)")

    def column(self, others: np.ndarray[Any, Any], index: int) -> np.ndarray[Any, Any]:
        """Its int8 votes (class ``index``) given the other LFs' (rows x LFs) votes."""
        covered = (others >= 0).any(axis=1) if others.size else np.zeros(len(others), bool)
        return np.where(covered, -1, index).astype(np.int8)


@dataclass(frozen=True)
class Kind:
    """An LF kind: its name (in matrices and reports), the fields that give it, the options
    only it may use, and where the idea comes from."""

    name: str
    fields: tuple[str, ...]
    options: tuple[str, ...]
    reference: str

    @property
    def noun(self) -> str:
        return self.fields[0] if len(self.fields) == 1 else self.name


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("keyword", ("keywords",), (), "https://www.snorkel.org/use-cases/01-spam-tutorial"),
        Kind("regex", ("regex",), ("ignore_case",), "https://pypi.org/project/regex/"),
        Kind("exemplar", ("exemplars",), ("threshold",), "https://arxiv.org/abs/1908.10084"),
        Kind("threshold", ("min", "max"), ("feature",), "https://doi.org/10.14778/3291264.3291268"),
        Kind("default", ("default",), (), "https://arxiv.org/abs/1711.10160"),
    )
}
"""Every LF kind a YAML file may use, by name."""
