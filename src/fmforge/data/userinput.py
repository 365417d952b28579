"""What users hand the data commands besides their rows: YAML spec files and regular expressions.

Cleaning rules and labeling functions are YAML. A spec file is read as bytes (PyYAML detects
UTF-8/16 from its byte-order mark and refuses anything else), parsed with ``safe_load`` (no
Python objects), and refused when its anchors and aliases would expand to more than
``MAX_YAML_VALUES`` values ("billion laughs"): everything downstream walks the expanded values.

A user's regular expression is compiled with the ``regex`` package (the syntax of Python's
``re``, VERSION0) and every search runs under ``REGEX_TIMEOUT_S``: a pattern that backtracks
catastrophically on some row is stopped and named instead of hanging the command. Patterns are
at most ``MAX_PATTERN_CHARS`` long. ``backtracking_risk`` checks a pattern before it runs:
a quantified group holding another quantifier, an alternation or an optional part (``(a+)+``,
``(a|aa)+``, ``(\\w+\\s?)*``, ``(.*a){12}``) is what backtracks exponentially; generated
patterns must have none (a user's pattern still gets the time limit).

``shown`` quotes a user's value in a one-line message: short, and never walking a structure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import regex
import yaml
from pydantic import BaseModel, ValidationError

from fmforge.errors import DataError

MAX_YAML_VALUES = 100_000
MAX_YAML_BYTES = 16 << 20
MAX_PATTERN_CHARS = 4_096
REGEX_TIMEOUT_S = 2.0

ErrorFactory = Callable[[str], DataError]


def load_yaml(source: str | Path, error: ErrorFactory, text_name: str) -> tuple[Any, str]:
    """The parsed YAML of a file (``Path``) or of text (``str``, called ``text_name``), and the
    name to use for it in messages. Every problem is raised through ``error`` in one line."""
    if isinstance(source, Path):
        name = str(source)
        try:
            if source.is_dir():
                raise error(f"{name}: is a directory, not a YAML file")
            with source.open("rb") as handle:
                data: bytes | str = handle.read(MAX_YAML_BYTES + 1)
        except OSError as problem:
            raise error(f"{name}: {problem.strerror or problem}") from None
        if len(data) > MAX_YAML_BYTES:
            raise error(f"{name}: larger than {MAX_YAML_BYTES >> 20} MiB; not a spec file")
    else:
        name, data = text_name, source
    try:
        spec = yaml.safe_load(data)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        what = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        raise error(f"{name}:{where} not valid YAML ({what})") from None
    except RecursionError:
        raise error(f"{name}: nested too deeply to be a spec file") from None
    _bounded(spec, name, error)
    return spec, name


def _bounded(spec: Any, name: str, error: ErrorFactory) -> None:
    """Refuse a document whose values, aliases expanded, number more than MAX_YAML_VALUES."""
    budget = MAX_YAML_VALUES
    stack = [spec]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            raise error(
                f"{name}: its anchors and aliases expand to more than {MAX_YAML_VALUES:,} "
                "values; refused (write the values out, or use fewer aliases)"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


class SpecProblem(Exception):
    """A value of a spec that its model refuses; the message names the field, without the
    spec's own name (the caller adds where it is)."""


def validate_fields(model: type[BaseModel], data: Any, noun: str = "option") -> Any:
    """``data`` (a mapping) as ``model``, or ``SpecProblem`` naming the first wrong field: an
    unknown one, a missing one, or one whose value is not what the field's description says."""
    if not isinstance(data, dict):
        raise SpecProblem(f"{noun}s must be a mapping ({{{noun}: value}}), not {shown(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        loc = first["loc"]
        name = str(loc[0]) if loc else ""
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise SpecProblem(f"unknown {noun} {name!r} ({noun}s: {known})") from None
        if first["type"] == "missing":
            raise SpecProblem(f"{noun} {name!r} is required") from None
        field = model.model_fields.get(name)
        expected = field.description if field is not None and field.description else None
        what = f"must be {expected}" if expected else first["msg"].replace("Input should", "should")
        raise SpecProblem(f"{noun} {name!r} {what}, not {shown(data.get(name))}") from None


def shown(value: Any, limit: int = 60) -> str:
    """A user's value as a message shows it: scalars quoted and cut, structures by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    text = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def backtracking_risk(pattern: str) -> str | None:
    """Why ``pattern`` may backtrack catastrophically (a repeated group holding another
    repeat, an alternation or an optional part), or None. Conservative: it refuses some safe
    patterns, never a nested quantifier."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        parsed = _parser.parse(pattern)
    except Exception as problem:  # re's parser: any failure means "not a pattern we run"
        return f"not a regular expression ({problem})"
    constants = _parser
    repeats = (constants.MAX_REPEAT, constants.MIN_REPEAT)

    def risky(items: Any, inside: bool) -> str | None:
        for op, arg in items:
            if op in repeats:
                low, high, body = arg
                if inside and high != 1:
                    return "a quantifier inside a quantified group"
                if inside and low == 0:
                    return "an optional part inside a quantified group"
                found = risky(body, inside or high > 1)
                if found:
                    return found
            elif op == constants.BRANCH:
                if inside:
                    return "an alternation inside a quantified group"
                for branch in arg[1]:
                    found = risky(branch, inside)
                    if found:
                        return found
            elif op == constants.SUBPATTERN:
                found = risky(arg[-1], inside)
                if found:
                    return found
            elif op in (constants.ASSERT, constants.ASSERT_NOT):
                found = risky(arg[1], inside)
                if found:
                    return found
        return None

    return risky(parsed, False)


class UserPattern:
    """A user's regular expression, searched with a time limit per text.

    ``owner`` names it in messages ("rule 2 (drop)", "LF kw_link"); ``error`` makes the domain's
    error."""

    def __init__(
        self, pattern: str, owner: str, error: ErrorFactory, *, ignore_case: bool = False
    ) -> None:
        self.pattern, self.owner, self.error = pattern, owner, error
        if len(pattern) > MAX_PATTERN_CHARS:
            raise error(f"{owner}: regex longer than {MAX_PATTERN_CHARS:,} characters")
        flags = regex.VERSION0 | (regex.IGNORECASE if ignore_case else 0)
        try:
            self.compiled = regex.compile(pattern, flags)
        except (regex.error, ValueError, OverflowError, RecursionError) as problem:
            detail = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
            raise error(f"{owner}: bad regex {shown(pattern)}: {detail}") from None

    def search(self, text: str) -> bool:
        try:
            return self.compiled.search(text, timeout=REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            raise self.error(
                f"{self.owner}: regex {shown(self.pattern)} ran over {REGEX_TIMEOUT_S:g} s on "
                f"one text of {len(text):,} characters (catastrophic backtracking?); simplify it"
            ) from None
