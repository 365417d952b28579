"""One naming rule for models, branches and tags, git's ``check-ref-format`` in spirit.

A name is 1-128 characters: letters, digits and ``. _ - /``, starting with a letter or digit;
``/`` separates components, none empty, starting with ``.`` or ending with ``.lock``; no
``..``; not ending with ``.`` or ``/``. Branch and tag names additionally are not all hex digits
of 4 or more (such a name could be, or later become, a prefix of a commit id and shadow it),
and not ``HEAD``.
"""

from __future__ import annotations

import re

from fmforge.errors import InvalidName

_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}\Z")
_HEX = re.compile(r"[0-9a-f]{4,}\Z")


def _problem(name: object) -> str | None:
    if not isinstance(name, str) or not _CHARS.match(name):
        return "letters, digits and '._-/', starting with a letter or digit, up to 128 characters"
    if ".." in name:
        return "no '..'"
    if name.endswith((".", "/")):
        return "must not end with '.' or '/'"
    for part in name.split("/"):
        if not part:
            return "no empty component ('//')"
        if part.startswith("."):
            return "no component starting with '.'"
        if part.endswith(".lock"):
            return "no component ending with '.lock'"
    return None


def check_model_name(name: object) -> str | None:
    """The problem with ``name`` as a model name, or None."""
    problem = _problem(name)
    return f"invalid model name {name!r}: {problem}" if problem else None


def check_ref_name(kind: str, name: object) -> str | None:
    """The problem with ``name`` as a branch or tag name, or None."""
    problem = _problem(name)
    if problem is None and isinstance(name, str):
        if _HEX.match(name):
            problem = "not all hex digits (it could be taken for a commit id)"
        elif name == "HEAD":
            problem = "HEAD is reserved"
    return f"invalid {kind} name {name!r}: {problem}" if problem else None


def validate_model_name(name: str) -> str:
    problem = check_model_name(name)
    if problem:
        raise InvalidName(problem)
    return name


def validate_ref_name(kind: str, name: str) -> str:
    problem = check_ref_name(kind, name)
    if problem:
        raise InvalidName(problem)
    return name
