"""Which chunks a filter can skip: the checked filter's parse tree against chunk statistics.

A filter (already checked by :mod:`fmforge.data.filters`) is evaluated over a chunk's
statistics (per column: min, max, null count; see :mod:`fmforge.data.storage`) to the set of
values it could take on the chunk's rows, in SQL's three-valued logic (true, false, null). A
chunk is read only if true is among them. Everything the evaluator does not know (functions,
casts, arithmetic, columns without statistics, constants of another kind than the column)
could be anything, so it never skips a chunk wrongly; comparisons DuckDB might make in
floating point (an integer column with a fractional constant, a float column) are widened by a
margin, so rounding cannot make it wrong either. The filter itself still runs in DuckDB, on
the chunks kept, behind the same locked door as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import product
from typing import Any

import pyarrow as pa

T, F, N = "T", "F", "N"
ANY = frozenset({T, F, N})
Stats = dict[str, list[Any]]

_INTEGER_CONSTANTS = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
}  # fmt: skip
_FLIP = {
    "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
    "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
    "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_EQUAL": "COMPARE_EQUAL",
    "COMPARE_NOTEQUAL": "COMPARE_NOTEQUAL",
}


def _and(a: str, b: str) -> str:
    return F if F in (a, b) else T if a == b == T else N


def _or(a: str, b: str) -> str:
    return T if T in (a, b) else F if a == b == F else N


_NOT = {T: F, F: T, N: N}


class ChunkFilter:
    """A checked filter's WHERE tree over the columns of ``schema``."""

    def __init__(self, tree: dict[str, Any], schema: pa.Schema) -> None:
        self.tree = tree
        self.kinds: dict[str, tuple[str, str] | None] = {}  # lower name -> (name, kind)
        for field in schema:
            lower = field.name.lower()
            kind = _kind(field.type)
            self.kinds[lower] = None if lower in self.kinds or kind is None else (field.name, kind)

    def may_match(self, stats: Stats | None, rows: int) -> bool:
        """Whether some row of a chunk with these statistics could satisfy the filter."""
        if stats is None:
            return True
        return T in self._values(self.tree, stats, rows)

    def _values(self, node: Any, stats: Stats, rows: int) -> frozenset[str]:
        kind = node.get("class") if isinstance(node, dict) else None
        if kind == "CONJUNCTION":
            combine: Callable[[str, str], str] = (
                _and if node.get("type") == "CONJUNCTION_AND" else _or
            )
            values = self._values(node["children"][0], stats, rows)
            for child in node["children"][1:]:
                more = self._values(child, stats, rows)
                values = frozenset(combine(a, b) for a, b in product(values, more))
            return values
        if kind == "OPERATOR" and node.get("type") == "OPERATOR_NOT":
            return frozenset(_NOT[v] for v in self._values(node["children"][0], stats, rows))
        if kind == "OPERATOR" and node.get("type") in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"):
            column = self._column(node["children"][0], stats)
            if column is None:
                return frozenset({T, F})
            nulls = column[2]
            out = ({T} if nulls else set()) | ({F} if nulls < rows else set())
            return frozenset(out if node["type"] == "OPERATOR_IS_NULL" else {_NOT[v] for v in out})
        if kind == "OPERATOR" and node.get("type") == "COMPARE_IN":
            return self._in(node["children"], stats, rows)
        if kind == "COMPARISON":
            return self._compare(node.get("type", ""), node["left"], node["right"], stats, rows)
        if kind == "BETWEEN":
            low = self._compare(
                "COMPARE_GREATERTHANOREQUALTO", node["input"], node["lower"], stats, rows
            )
            high = self._compare(
                "COMPARE_LESSTHANOREQUALTO", node["input"], node["upper"], stats, rows
            )
            return frozenset(_and(a, b) for a, b in product(low, high))
        if kind == "COLUMN_REF":
            found = self._column(node, stats)
            if found is None or found[3] != "bool":
                return ANY
            low, high, nulls, _ = found
            out = {N} if nulls else set()
            if nulls < rows:
                out |= {T, F} if low is None else ({T} if high else set()) | (set() if low else {F})
            return frozenset(out)
        return ANY

    def _column(self, node: Any, stats: Stats) -> tuple[Any, Any, int, str] | None:
        """(min, max, nulls, kind) of a plain column reference, or None."""
        if not isinstance(node, dict) or node.get("class") != "COLUMN_REF":
            return None
        names = [str(n).lower() for n in node.get("column_names", [])]
        if len(names) == 2 and names[0] == "data" and "data" not in self.kinds:
            names = names[1:]
        if len(names) != 1 or self.kinds.get(names[0]) is None:
            return None
        name, kind = self.kinds[names[0]]  # type: ignore[misc]
        entry = stats.get(name)
        if not isinstance(entry, list) or len(entry) != 3:
            return None
        return entry[0], entry[1], int(entry[2]), kind

    def _compare(self, op: str, left: Any, right: Any, stats: Stats, rows: int) -> frozenset[str]:
        column = self._column(left, stats)
        if column is None:
            column, right, op = self._column(right, stats), left, _FLIP.get(op, "")
        if column is None or op not in _FLIP:
            return ANY
        low, high, nulls, kind = column
        constant = _constant(right)
        if constant is None:
            return ANY
        value, constant_kind = constant
        if value is None:
            return frozenset({N})
        out = {N} if nulls else set()
        if nulls >= rows:
            return frozenset(out)
        exact = (kind, constant_kind) in (("int", "int"), ("text", "text"))
        if not exact and not (kind in ("int", "float") and constant_kind in ("int", "float")):
            return ANY
        if low is None or high is None:
            return frozenset(out | {T, F})
        if not exact:
            value = float(value)
            margin = 1e-9 * max(1.0, abs(value))
            low, high = float(low) - margin, float(high) + margin
        return frozenset(out | _outcomes(op, low, high, value))

    def _in(self, children: Sequence[Any], stats: Stats, rows: int) -> frozenset[str]:
        if not children:
            return ANY
        out: set[str] = set()
        for item in children[1:]:
            out |= self._compare("COMPARE_EQUAL", children[0], item, stats, rows)
        return frozenset(out)


def _outcomes(op: str, low: Any, high: Any, value: Any) -> set[str]:
    """Which of true/false ``x op value`` can be for some x in [low, high]."""
    if op == "COMPARE_EQUAL":
        return ({T} if low <= value <= high else set()) | (set() if low == high == value else {F})
    if op == "COMPARE_NOTEQUAL":
        return {_NOT[v] for v in _outcomes("COMPARE_EQUAL", low, high, value)}
    if op == "COMPARE_LESSTHAN":
        return ({T} if low < value else set()) | ({F} if high >= value else set())
    if op == "COMPARE_LESSTHANOREQUALTO":
        return ({T} if low <= value else set()) | ({F} if high > value else set())
    if op == "COMPARE_GREATERTHAN":
        return ({T} if high > value else set()) | ({F} if low <= value else set())
    return ({T} if high >= value else set()) | ({F} if low < value else set())


def _constant(node: Any) -> tuple[Any, str] | None:
    """(value, kind) of a literal, kind int, float or text; (None, "") for NULL."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    literal = node.get("value") or {}
    if literal.get("is_null"):
        return None, ""
    kind = (literal.get("type") or {}).get("id")
    value = literal.get("value")
    if kind in _INTEGER_CONSTANTS and isinstance(value, int) and not isinstance(value, bool):
        return value, "int"
    if kind in ("DOUBLE", "FLOAT") and isinstance(value, int | float):
        return float(value), "float"
    if kind == "DECIMAL" and isinstance(value, int):
        scale = ((literal.get("type") or {}).get("type_info") or {}).get("scale")
        if isinstance(scale, int):
            return Decimal(value).scaleb(-scale), "float"
    if kind == "VARCHAR" and isinstance(value, str):
        return value, "text"
    return None


def _kind(kind: pa.DataType) -> str | None:
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_boolean(kind):
        return "bool"
    return None
