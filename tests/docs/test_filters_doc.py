"""docs/cli.md's Filters section lists exactly the functions a filter may call."""

from __future__ import annotations

import re
from pathlib import Path

from fmforge.data.filters import SCALAR_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_the_filters_section_lists_exactly_the_allowed_functions() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text[text.index("\n## Filters\n") :]
    functions = section[section.index("- **functions**") : section.index("\nRefused, with")]
    shown = {w for span in re.findall(r"`([a-z_0-9 \n]+)`", functions) for w in span.split()}
    named = {name for name in SCALAR_FUNCTIONS if name[0].isalpha()}  # operators listed above
    assert sorted(named - shown) == [], "allowed but not documented"
    assert sorted(shown - named) == [], "documented but not allowed"
