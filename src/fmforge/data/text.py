"""Text folding shared by deduplication rules."""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[\W_]+")
# ASCII punctuation, symbols and control characters to spaces: str.translate is much faster
# than a regex for the common case.
_ASCII_FOLD = {c: " " for c in range(128) if not chr(c).isalnum()}


def normalize(text: str) -> str:
    """Case, accents, spacing and punctuation folded: ``"Ça  va?"`` -> ``"ca va"``."""
    folded = text.casefold()
    if folded.isascii():
        return " ".join(folded.translate(_ASCII_FOLD).split())
    decomposed = unicodedata.normalize("NFKD", folded)  # accents: drop the combining marks
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_NOT_WORD.sub(" ", folded).split())
