"""MLflow's search syntax: ``filter_string`` and ``order_by``, as its server reads them.

    filter  := clause ("AND" clause)*
    clause  := IDENT OP VALUE | IDENT ("IN" | "NOT IN") "(" VALUE ("," VALUE)* ")"
    IDENT   := [ENTITY "."] KEY        ENTITY: metrics params tags attributes datasets (aliases:
                                       metric param tag attribute attr run dataset); a bare KEY
                                       is an attribute (status, run_name, start_time, ...)
    KEY     := word(.word)* | `back-quoted` | "double-quoted"   (tags.mlflow.parentRunId,
                                       metrics.`train/grad_norm`)
    OP      := = != < <= > >= LIKE ILIKE
    VALUE   := a number, or a 'single' or "double" quoted string

A clause about a key the entity does not have is false (MLflow's search leaves such rows
out). Values compare as numbers for metrics and times, as strings elsewhere. Parsed into
clauses, never evaluated as code; anything else is one ``InvalidRequest`` line naming where.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fmforge.errors import InvalidRequest
from fmforge.server.errors import show

_ENTITIES = {
    "metrics": "metrics", "metric": "metrics", "params": "params", "param": "params",
    "parameters": "params", "parameter": "params", "tags": "tags", "tag": "tags",
    "attributes": "attributes", "attribute": "attributes", "attr": "attributes",
    "run": "attributes", "datasets": "datasets", "dataset": "datasets",
}  # fmt: skip
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<quoted>`[^`]*`|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op><=|>=|!=|<>|==|=|<|>)
    | (?P<paren>[(),])
    | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
    | (?P<word>[A-Za-z_][\w.\-/:]*\.?)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "LIKE", "ILIKE", "IN", "NOT", "ASC", "DESC"}


@dataclass(frozen=True)
class Clause:
    entity: str  # metrics | params | tags | attributes | datasets
    key: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN
    value: Any  # a float, a str, or a tuple of them (IN)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise InvalidRequest(
                f"filter {show(text, 80)}: cannot read it at {show(text[position:], 30)}"
            )
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body) if text[0] in "'\"" else body


def _identifier(tokens: list[tuple[str, str]], i: int, text: str) -> tuple[str, str, int]:
    """(entity, key, next index) of the identifier starting at ``tokens[i]``."""
    kind, value = tokens[i]
    if kind == "quoted" and value[0] in '`"':
        return "attributes", _unquote(value), i + 1
    if kind != "word":
        raise InvalidRequest(f"filter {show(text, 80)}: expected a name, got {show(value)}")
    head, dot, rest = value.partition(".")
    entity = _ENTITIES.get(head.lower()) if dot else None
    if entity is None:
        return "attributes", value, i + 1
    if rest:
        return entity, rest, i + 1
    if i + 1 < len(tokens) and tokens[i + 1][0] == "quoted" and tokens[i + 1][1][0] in '`"':
        return entity, _unquote(tokens[i + 1][1]), i + 2  # metrics.`train/loss`
    raise InvalidRequest(f"filter {show(text, 80)}: {show(value)} names no key")


def _literal(kind: str, value: str, text: str) -> Any:
    if kind == "number":
        return float(value)
    if kind == "quoted" and value[0] in "'\"":
        return _unquote(value)
    raise InvalidRequest(f"filter {show(text, 80)}: expected a value, got {show(value)}")


def parse_filter(text: str | None) -> list[Clause]:
    """The clauses of ``text`` (all must hold), or ``InvalidRequest`` naming the problem."""
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    clauses: list[Clause] = []
    i = 0
    while True:
        if i >= len(tokens):
            raise InvalidRequest(f"filter {show(text, 80)}: ends where a comparison should be")
        entity, key, i = _identifier(tokens, i, text)
        if i >= len(tokens):
            raise InvalidRequest(f"filter {show(text, 80)}: {key!r} has no comparison")
        kind, word = tokens[i]
        op = word.upper() if kind == "word" else {"==": "=", "<>": "!="}.get(word, word)
        if kind == "word" and op == "NOT" and i + 1 < len(tokens):
            op, i = "NOT IN", i + 1
            if tokens[i][1].upper() != "IN":
                raise InvalidRequest(f"filter {show(text, 80)}: NOT must be followed by IN")
        if kind not in ("op", "word") or op not in {"=", "!=", "<", "<=", ">", ">=", "LIKE",
                                                    "ILIKE", "IN", "NOT IN"}:  # fmt: skip
            raise InvalidRequest(
                f"filter {show(text, 80)}: expected a comparison after {key!r}, got {show(word)}"
            )
        i += 1
        if op in ("IN", "NOT IN"):
            if i >= len(tokens) or tokens[i] != ("paren", "("):
                raise InvalidRequest(f"filter {show(text, 80)}: {op} needs a (list)")
            values, i = [], i + 1
            while i < len(tokens) and tokens[i] != ("paren", ")"):
                if tokens[i] != ("paren", ","):
                    values.append(_literal(*tokens[i], text))
                i += 1
            if i >= len(tokens):
                raise InvalidRequest(f"filter {show(text, 80)}: missing ')'")
            value: Any = tuple(values)
            i += 1
        else:
            if i >= len(tokens):
                raise InvalidRequest(f"filter {show(text, 80)}: {key} {op} needs a value")
            value = _literal(*tokens[i], text)
            i += 1
        if entity == "metrics" and not isinstance(value, float) and op not in ("IN", "NOT IN"):
            raise InvalidRequest(
                f"filter {show(text, 80)}: metrics compare with numbers, got {show(value)}"
            )
        clauses.append(Clause(entity, key, op, value))
        if i >= len(tokens):
            return clauses
        if tokens[i][0] != "word" or tokens[i][1].upper() != "AND":
            raise InvalidRequest(
                f"filter {show(text, 80)}: expected AND, got {show(tokens[i][1])} (MLflow's "
                "search joins clauses with AND only)"
            )
        i += 1


def _like(pattern: str, value: str, fold: bool) -> bool:
    regex = "".join(
        ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern
    )  # fmt: skip
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def holds(clause: Clause, actual: Any, absent_differs: bool = False) -> bool:
    """Whether ``actual`` (the row's value for the clause's key; None: absent) passes;
    ``absent_differs``: an absent key passes ``!=`` (the model registry's rule: MLflow's client
    adds ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every search)."""
    if actual is None:
        return absent_differs and clause.op in ("!=", "NOT IN")
    expected, op = clause.value, clause.op
    if isinstance(actual, int | float) and not isinstance(actual, bool):
        try:
            expected = (tuple(float(v) for v in expected) if isinstance(expected, tuple)
                        else float(expected))  # fmt: skip
        except ValueError:
            return False
        actual = float(actual)
    else:
        actual = str(actual)
        if isinstance(expected, float):
            expected = _number_text(expected)
    if op == "LIKE" or op == "ILIKE":
        return _like(str(expected), str(actual), op == "ILIKE")
    if op == "IN":
        return actual in expected
    if op == "NOT IN":
        return actual not in expected
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }  # fmt: skip
    try:
        return compare[op](actual, expected)
    except TypeError:
        return False


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


Lookup = Callable[[str, str], Any]
"""(entity, key) -> the row's value, or None when it has none."""


def matches(clauses: Sequence[Clause], lookup: Lookup, *, absent_differs: bool = False) -> bool:
    return all(holds(c, lookup(c.entity, c.key), absent_differs) for c in clauses)


@dataclass(frozen=True)
class Order:
    entity: str
    key: str
    ascending: bool


def parse_order_by(items: Sequence[str]) -> list[Order]:
    """``["metrics.acc DESC", "attributes.start_time"]`` as orders."""
    out = []
    for item in items:
        tokens = _tokens(item)
        if not tokens:
            continue
        entity, key, i = _identifier(tokens, 0, item)
        ascending = True
        if i < len(tokens):
            word = tokens[i][1].upper()
            if word not in ("ASC", "DESC") or i + 1 != len(tokens):
                raise InvalidRequest(
                    f"order_by {show(item, 60)}: expected ASC or DESC after the name"
                )
            ascending = word == "ASC"
        out.append(Order(entity, key, ascending))
    return out


def sort_rows(rows: list[Any], orders: Sequence[Order], lookup: Callable[[Any], Lookup]) -> None:
    """Sort ``rows`` in place by ``orders`` (the last is applied first); rows without a value
    go last whatever the direction, as MLflow puts them."""
    for order in reversed(orders):
        present = [(lookup(r)(order.entity, order.key), r) for r in rows]
        have = [pair for pair in present if pair[0] is not None]
        missing = [r for value, r in present if value is None]
        have.sort(key=lambda pair: _sort_key(pair[0]), reverse=not order.ascending)
        rows[:] = [r for _, r in have] + missing


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))
