"""The runs query language: ``config.lr > 1e-4 and metrics.eval_acc.max > 0.9``.

    query   := clause (("and" | "or") clause)*        "and" binds tighter than "or"
    clause  := "not" clause | "(" query ")" | FIELD OP VALUE
    FIELD   := config.<key> | metrics.<name>.(last|min|max|count) | status | name | project
             | tags | datasets | base_model | id
    OP      := = | != | < | <= | > | >= | ~ (contains; for tags and datasets: has an element)
    VALUE   := a number, a 'quoted' or "quoted" string, or a bare word

A comparison with a missing field is false; a string value that spells a number (an MLflow
param, ``"0.01"``) compares with a number as that number. Parsed into a predicate; never
evaluated as code.
A metric that no run of the selection has is a typo, not a missing field: ``RunsIndex.rows``
refuses it, naming the closest metric names (``parse_query`` gives the fields a query names).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from fmforge.errors import QueryError

Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(
    r"\s*(?:(?P<op><=|>=|!=|=|<|>|~)|(?P<paren>[()])|(?P<str>'[^']*'|\"[^\"]*\")|(?P<word>[^\s()<>=!~]+))"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_FIELDS = re.compile(
    r"(config\..+|metrics\..+\.(last|min|max|count)|status|name|project|tags|datasets"
    r"|base_model|id)\Z"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise QueryError(f"cannot read the query at {text[position:]!r}")
            break
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def field_value(run: dict[str, Any], name: str) -> Any:
    """The value of FIELD for a run dict (see ``RunsIndex.rows``); None when absent."""
    if name.startswith("config."):
        return run["config"].get(name[len("config.") :])
    if name.startswith("metrics."):
        metric, _, stat = name[len("metrics.") :].rpartition(".")
        return run["metrics"].get(metric, {}).get(stat)
    return run.get(name)


def metric_of(field: str) -> str | None:
    """The metric name a FIELD reads (``metrics.train.loss.min`` -> ``train.loss``), or None."""
    if not field.startswith("metrics."):
        return None
    return field[len("metrics.") :].rpartition(".")[0]


MAX_DEPTH = 100


def parse(text: str) -> Predicate:
    return parse_query(text)[0]


def parse_query(text: str) -> tuple[Predicate, list[str]]:
    """The predicate of a query, and the FIELDs it names in order."""
    tokens = _tokens(text)
    position = 0
    fields: list[str] = []

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise QueryError(f"the query {text!r} ends too early")
        position += 1
        return tokens[position - 1]

    def query(depth: int = 0) -> Predicate:
        parts = [conjunction(depth)]
        while (token := peek()) is not None and token == ("word", "or"):
            take()
            parts.append(conjunction(depth))
        return parts[0] if len(parts) == 1 else (lambda run: any(p(run) for p in parts))

    def conjunction(depth: int) -> Predicate:
        parts = [clause(depth)]
        while (token := peek()) is not None and token == ("word", "and"):
            take()
            parts.append(clause(depth))
        return parts[0] if len(parts) == 1 else (lambda run: all(p(run) for p in parts))

    def clause(depth: int = 0) -> Predicate:
        if depth > MAX_DEPTH:  # Python's stack, not the user, would end the query
            raise QueryError(f"the query nests 'not' and '(' deeper than {MAX_DEPTH} levels")
        kind, value = take()
        if (kind, value) == ("word", "not"):
            inner = clause(depth + 1)
            return lambda run: not inner(run)
        if (kind, value) == ("paren", "("):
            inner = query(depth + 1)
            if take() != ("paren", ")"):
                raise QueryError(f"missing ')' in {text!r}")
            return inner
        if kind != "word" or not _FIELDS.match(value):
            raise QueryError(
                f"unknown field {value!r}: use config.KEY, metrics.NAME.(last|min|max|count), "
                "status, name, project, tags, datasets, base_model or id"
            )
        fields.append(value)
        op_kind, op = take()
        if op_kind != "op":
            raise QueryError(f"expected a comparison after {value!r}, got {op!r}")
        literal_kind, literal = take()
        if literal_kind not in ("word", "str"):
            raise QueryError(f"expected a value after {value} {op}, got {literal!r}")
        return _compare(value, op, _literal(literal_kind, literal))

    predicate = query()
    if position != len(tokens):
        raise QueryError(f"unexpected {tokens[position][1]!r} in {text!r}")
    return predicate, fields


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(name: str, op: str, expected: Any) -> Predicate:
    def check(run: dict[str, Any]) -> bool:
        actual = field_value(run, name)
        if actual is None:
            return False
        if op == "~":
            if isinstance(actual, list):
                return any(str(expected) in str(item) for item in actual)
            return str(expected) in str(actual)
        if isinstance(actual, str) and _is_number(expected):
            try:  # MLflow params are strings: "0.01" compares as the number it spells
                actual = float(actual)
            except ValueError:
                return op == "!="
        try:
            return bool(_OPS[op](actual, expected))
        except TypeError:  # a number against a word: not a match, not an error
            return False

    return check
