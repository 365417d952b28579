""" "Did you mean ...?": the known names closest to one that names nothing.

Every not-found message for a name a user typed (a model, branch, tag, dataset, run, remote or
metric) ends with the closest known names, as git and cargo do for a mistyped command.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, known: Iterable[str], *, limit: int = 3) -> str:
    """``"; did you mean 'loss'?"`` (or ``'a' or 'b'``) for the known names close to ``word``
    (difflib's ratio of 0.6 or more), or ``""`` when none is."""
    close = difflib.get_close_matches(word, sorted(set(known) - {word}), n=limit, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(name) for name in close) + "?"
