"""The dataset naming rule."""

from __future__ import annotations

import re

from fmforge.errors import InvalidName

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}\Z")


def check_dataset_name(name: object) -> str | None:
    """The problem with ``name`` as a dataset name, or None."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        return (
            f"invalid dataset name {name!r}: letters, digits and '._-', starting with a letter "
            "or digit, up to 128 characters, no '..'"
        )
    return None


def validate_dataset_name(name: str) -> str:
    problem = check_dataset_name(name)
    if problem:
        raise InvalidName(problem)
    return name
