"""The error tree drawn in ``fmforge.errors``'s docstring is the real one, and every error has an
HTTP status and a stable, unique code."""

from __future__ import annotations

import re

import fmforge.errors
from fmforge.errors import FmforgeError


def _drawn() -> list[tuple[int, str]]:
    """(depth, class name) of each line of the tree in the docstring."""
    lines = (fmforge.errors.__doc__ or "").splitlines()
    root = next(line for line in lines if line.strip() == "FmforgeError")
    base = len(root) - len(root.lstrip())
    out = [(0, "FmforgeError")]
    for line in lines:
        match = re.match(r"^([│ ]*)[├└]── ([A-Za-z]+)", line[base:])
        if match:
            out.append((len(match.group(1)) // 4 + 1, match.group(2)))
    return out


def _real(cls: type[FmforgeError] = FmforgeError, depth: int = 0) -> list[tuple[int, str]]:
    out = [(depth, cls.__name__)]
    for sub in cls.__subclasses__():
        if sub.__module__ == "fmforge.errors":
            out += _real(sub, depth + 1)
    return out


def test_the_docstring_draws_the_real_tree() -> None:
    drawn, real = _drawn(), _real()
    assert sorted(drawn) == sorted(real)
    # each drawn class sits under its real parent
    parents: dict[int, str] = {}
    for depth, name in drawn:
        parents[depth] = name
        cls = getattr(fmforge.errors, name)
        if depth:
            assert cls.__base__.__name__ == parents[depth - 1], name


def test_every_error_lives_in_fmforge_errors_with_a_unique_code() -> None:
    found: list[type[FmforgeError]] = []
    stack: list[type[FmforgeError]] = [FmforgeError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack += cls.__subclasses__()
    assert {c.__module__ for c in found} == {"fmforge.errors"}
    codes = [c.code for c in found]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"[a-z][a-z_]+", code) for code in codes)
    assert all(400 <= c.http_status <= 599 for c in found)
