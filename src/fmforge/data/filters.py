"""User expressions reaching SQL: checked by DuckDB's own parser, then run behind a locked door.

A **filter** (``data show --where``, ``data trace --where``, ``data forget --where``, a cleaning
rule's ``sql:``) is ONE boolean expression over the columns of one dataset version::

    expr     := expr OR expr | expr AND expr | NOT expr | ( expr )
              | expr CMP expr | expr IS [NOT] DISTINCT FROM expr
              | expr [NOT] BETWEEN expr AND expr | expr IS [NOT] NULL
              | expr [NOT] IN ( expr, ... ) | expr IN [ expr, ... ]
              | expr [NOT] LIKE | ILIKE | GLOB | SIMILAR TO expr [ESCAPE 'c']
              | expr ARITH expr | - expr | expr || expr | expr [ index ] | expr COLLATE name
              | CASE [expr] WHEN expr THEN expr ... [ELSE expr] END
              | CAST ( expr AS type ) | TRY_CAST ( expr AS type ) | expr :: type
              | COALESCE ( expr, ... ) | FUNCTION ( expr, ... ) | column | literal
    CMP      := = | == | != | <> | < | <= | > | >=
    ARITH    := + | - | * | / | // | % | ** | ^
    column   := name | "quoted name" | data.name | struct_column.field   (``_row_id`` included)
    literal  := 'text' | number | TRUE | FALSE | NULL | [ list ] | DATE '...' | INTERVAL '...'
    FUNCTION := one of ``SCALAR_FUNCTIONS`` (text, numbers, lists, dates; nothing that reads a
                file, a setting, a variable or the clock)

Refused, each with one line naming what was found: a second statement (``;``), a subquery or
any ``SELECT``, ``UNION``/``INTERSECT``/``EXCEPT``, a clause after the expression (``ORDER BY``,
``LIMIT``, ``GROUP BY``...), a name that is not a column, any function not listed (so every
table or file function: ``read_text``, ``read_csv``, ``read_parquet``, ``glob``, ``query``...,
and ``getenv``, ``current_setting``, ``getvariable``), aggregates and window functions, ``*``,
lambdas and parameters. Statements (``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``PRAGMA``,
``SET``, ``CREATE``...) cannot be written inside one expression at all.

How: the filter is placed in ``SELECT * FROM data WHERE (\\n<filter>\\n)``; DuckDB parses that
exact text (``json_serialize_sql``, which never runs it); the tree must be that statement and
nothing else, and every node of the condition must be one the grammar above allows. The text
that was checked is the text that runs. A **query** (:func:`run_query`, ``fmforge.data.query``)
is one ``SELECT`` reading the table ``data`` only (CTEs, joins of ``data`` with itself,
subqueries, ``GROUP BY``, aggregates and window functions allowed; no table function, no other
table, no recursive CTE), checked the same way.

The second wall: every statement runs on an in-memory DuckDB with external access off (no
file, no network, no ``ATTACH``/``COPY``/``INSTALL``/``LOAD``), extension autoloading off,
Python replacement scans off, and its configuration locked, so ``SET`` cannot undo any of it.
The tables it reads are Arrow tables registered by this module; DuckDB opens no file.

A checked filter's parse tree (``select_stored``) also tells which stored chunks could hold
a matching row (:mod:`fmforge.data.pushdown`); only those are read and handed to ``select``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fmforge.errors import InvalidFilter

if TYPE_CHECKING:  # imported where used: 34 MB that a repository opened to log runs never needs
    import duckdb

TABLE = "data"


def _names(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


SCALAR_FUNCTIONS = _names(
    # operators (LIKE is ~~, ILIKE ~~*, GLOB ~~~, SIMILAR TO is regexp_full_match)
    "+ - * / // % ** ^ || ~~ !~~ ~~* !~~* ~~~",
    "like_escape not_like_escape ilike_escape not_ilike_escape",
    # text
    "length len strlen char_length character_length octet_length lower lcase upper ucase",
    "trim ltrim rtrim substr substring left right replace reverse repeat lpad rpad concat",
    "concat_ws contains starts_with ends_with prefix suffix strpos instr position split_part",
    "string_split str_split regexp_matches regexp_full_match regexp_replace regexp_extract",
    "regexp_extract_all regexp_split_to_array levenshtein damerau_levenshtein hamming jaccard",
    "jaro_similarity jaro_winkler_similarity strip_accents nfc_normalize ascii chr unicode ord",
    "translate md5 sha1 sha256 hash",
    # numbers
    "abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 log2 pow power mod",
    "greatest least isnan isinf isfinite",
    # nulls, lists, structs
    "nullif list_value list_contains list_has array_contains array_has list_has_any",
    "list_has_all list_extract list_element array_length cardinality struct_pack struct_extract",
    # dates and times (of the values, never the clock)
    "year month day hour minute second date_part datepart date_trunc datetrunc strftime",
    "strptime try_strptime epoch dayofweek dayofyear week quarter make_date date_diff datediff",
    # INTERVAL 1 DAY and friends
    "to_years to_months to_weeks to_days to_hours to_minutes to_seconds to_milliseconds",
    "to_microseconds",
)
AGGREGATE_FUNCTIONS = _names(
    "count count_star count_if sum avg mean min max median mode quantile quantile_cont",
    "quantile_disc stddev stddev_pop stddev_samp variance var_pop var_samp string_agg",
    "group_concat list array_agg first last any_value arg_max arg_min max_by min_by bool_and",
    "bool_or approx_count_distinct approx_quantile histogram corr covar_pop covar_samp",
    "entropy product sem kurtosis skewness",
)
WINDOW_FUNCTIONS = _names(
    "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value",
    "nth_value",
)
_OPERATORS = {  # OPERATOR nodes a filter may hold
    "OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN",
    "COMPARE_NOT_IN", "OPERATOR_COALESCE", "OPERATOR_NULLIF", "ARRAY_EXTRACT", "ARRAY_SLICE",
    "STRUCT_EXTRACT",
}  # fmt: skip
_PLAIN = {"CONSTANT", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST", "COLLATE"}
_FOUND = {  # expression classes a filter refuses, as the error names them
    "SUBQUERY": "a subquery",
    "STAR": "*",
    "WINDOW": "a window function (OVER)",
    "LAMBDA": "a lambda",
    "PARAMETER": "a parameter",
    "POSITIONAL_REFERENCE": "a positional reference (#N)",
}
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
_TABLE_REFS = {
    "BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY", "SHOW_REF",
    "PIVOT", "COLUMN_DATA", "DELIM_GET", "BOUND_REF",
}  # fmt: skip
_CLAUSES = {  # keys of a SELECT node a filter cannot add to, as the error names them
    "modifiers": "ORDER BY, LIMIT or DISTINCT",
    "group_expressions": "GROUP BY",
    "group_sets": "GROUP BY",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "sample": "USING SAMPLE",
    "aggregate_handling": "GROUP BY",
    "cte_map": "WITH",
    "select_list": "a second select list",
    "from_table": "a second FROM",
}
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "python_enable_replacements": False,
    "lock_configuration": True,
}
_WORD = re.compile(r"[A-Za-z_]+")
_MAX_DEPTH = 400  # nested dicts and lists of a parse tree: about 150 levels of an expression
_TOO_DEEP = "nested too deeply (write it with fewer levels of parentheses, calls or operators)"


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads no file, loads no extension, sees no Python variable and
    cannot be reconfigured: the wall behind the checks."""
    import duckdb

    return duckdb.connect(config=dict(_CONFIG))


def select(
    table: pa.Table, condition: str, *, source: str = "--where", relation: str = "the dataset"
) -> pa.Table:
    """The rows of ``table`` for which the filter ``condition`` holds (NULL counts as false).
    ``source`` and ``relation`` name the option and the dataset in error messages."""
    connection = connect()
    try:
        sql, _ = _checked_filter(connection, condition, table.column_names, source, relation)
        connection.register(TABLE, table)
        return _run(connection, sql, source)
    finally:
        connection.close()


def mask(
    table: pa.Table, condition: str, *, source: str = "--where", relation: str = "the dataset"
) -> list[bool]:
    """Per row of ``table``: whether the filter ``condition`` holds (NULL counts as false)."""
    position = "_position"
    while position in {c.lower() for c in table.column_names}:  # DuckDB ignores case
        position = "_" + position
    connection = connect()
    try:
        sql, _ = _checked_filter(connection, condition, table.column_names, source, relation)
        numbered = table.append_column(position, pa.array(range(table.num_rows), pa.int64()))
        connection.register(TABLE, numbered)
        hits = set(_run(connection, sql, source).column(position).to_pylist())
    finally:
        connection.close()
    return [i in hits for i in range(table.num_rows)]


def check_filter(
    condition: str,
    columns: Sequence[str] | None = None,
    *,
    source: str = "--where",
    relation: str = "the dataset",
) -> str:
    """The statement that runs ``condition``, once it is found to be one allowed expression
    (over ``columns``, when given); else :class:`InvalidFilter` naming what was found."""
    connection = connect()
    try:
        return _checked_filter(connection, condition, columns, source, relation)[0]
    finally:
        connection.close()


def select_stored(
    condition: str,
    columns: Sequence[str],
    read: Callable[[dict[str, Any]], pa.Table],
    *,
    source: str = "--where",
    relation: str = "the dataset",
) -> pa.Table:
    """The rows for which the filter ``condition`` holds, of the table ``read`` gives when
    handed the filter's parse tree (its WHERE clause, as ``json_serialize_sql`` gives it) once
    the filter is found to be one allowed expression over ``columns``: ``read`` may leave out
    rows the tree shows cannot match (:mod:`fmforge.data.pushdown`)."""
    connection = connect()
    try:
        sql, tree = _checked_filter(connection, condition, columns, source, relation)
        connection.register(TABLE, read(tree))
        return _run(connection, sql, source)
    finally:
        connection.close()


def run_query(table: pa.Table, sql: str, *, source: str = "query") -> pa.Table:
    """Run ``sql``, one ``SELECT`` reading ``table`` as ``data`` and nothing else."""
    connection = connect()
    try:
        _check_query(connection, sql, source)
        connection.register(TABLE, table)
        return _run(connection, sql, source)
    finally:
        connection.close()


def check_query(sql: str, *, source: str = "query") -> None:
    """Refuse (:class:`InvalidFilter`) anything but one ``SELECT`` reading ``data`` only."""
    connection = connect()
    try:
        _check_query(connection, sql, source)
    finally:
        connection.close()


def _run(connection: duckdb.DuckDBPyConnection, sql: str, source: str) -> pa.Table:
    import duckdb

    try:
        return connection.execute(sql).to_arrow_table()
    except duckdb.Error as error:
        raise InvalidFilter(f"{source}: {_first_line(error)}") from None


def _first_line(error: BaseException | str) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else "an error without a message"


def _parse(connection: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql`` (never run), or ``{"error_message": ...}``."""
    row = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    try:
        tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    except RecursionError:
        return {"error": True, "error_message": _TOO_DEEP}
    return tree


@cache
def _type_names() -> frozenset[str]:
    """DuckDB's built-in type names and aliases (a fresh connection has no other)."""
    connection = connect()
    try:
        rows = connection.execute("SELECT type_name FROM duckdb_types()").fetchall()
    finally:
        connection.close()
    return frozenset(str(row[0]).lower() for row in rows)


def _too_deep(message: str) -> bool:
    return message == _TOO_DEEP or "expression depth" in message or "memory exhausted" in message


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "query_location"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _wrap(condition: str) -> str:
    return f"SELECT * FROM {TABLE} WHERE (\n{condition}\n)"


def _checked_filter(
    connection: duckdb.DuckDBPyConnection,
    condition: str,
    columns: Sequence[str] | None,
    source: str,
    relation: str,
) -> tuple[str, dict[str, Any]]:
    """(the statement that runs ``condition``, the parse tree of its WHERE clause)."""

    def refused(found: str) -> InvalidFilter:
        return InvalidFilter(
            f"{source}: only one expression over the columns of {relation}; found {found}"
        )

    if not isinstance(condition, str) or not condition.strip():
        raise InvalidFilter(f"{source}: empty; give one expression over the columns of {relation}")
    found = _scan(condition)
    if found:
        raise refused(found)
    sql = _wrap(condition)
    tree = _parse(connection, sql)
    if tree.get("error"):
        message = _first_line(tree.get("error_message") or "does not parse")
        if "Only SELECT" in message:
            raise refused("a statement")
        if _too_deep(message):
            raise InvalidFilter(f"{source}: {_TOO_DEEP}")
        raise InvalidFilter(f"{source}: does not parse as an expression: {message}")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise refused("a second statement")
    node = dict(statements[0]["node"])
    where = node.pop("where_clause", None)
    shape = dict(_parse(connection, _wrap("true"))["statements"][0]["node"])
    shape.pop("where_clause", None)
    if node.get("type") == "SET_OPERATION_NODE":
        raise refused(f"{node.get('setop_type', 'UNION')} (a second query)")
    if statements[0].get("named_param_map"):
        raise refused("a parameter")
    node, shape = _strip(node), _strip(shape)
    if node != shape or where is None:
        differ = [_CLAUSES.get(k, k) for k in shape if node.get(k) != shape[k]]
        raise refused(", ".join(dict.fromkeys(differ)) or "more than an expression")
    _Checker(source, refused, columns, relation, query=False).visit(where)
    return sql, _strip(where)


def _scan(text: str) -> str | None:
    """What the tokens alone show a filter is not (for a clear message; the parse tree is the
    check): a ``;`` or a reserved word that begins or joins queries."""
    import duckdb

    tokens = duckdb.tokenize(text)
    for index, (offset, kind) in enumerate(tokens):
        if kind == duckdb.token_type.operator and text[offset] == ";":
            return "a second statement" if index + 1 < len(tokens) else "a ';'"
    for offset, kind in tokens:
        word = _WORD.match(text, offset)
        name = word.group(0).upper() if word else ""
        if kind == duckdb.token_type.keyword and name in ("UNION", "INTERSECT", "EXCEPT"):
            return f"{name} (a second query)"
    for offset, kind in tokens:
        word = _WORD.match(text, offset)
        if kind == duckdb.token_type.keyword and word and word.group(0).upper() == "SELECT":
            return "a subquery (SELECT)"
    return None


def _check_query(connection: duckdb.DuckDBPyConnection, sql: str, source: str) -> None:
    import duckdb

    def refused(found: str) -> InvalidFilter:
        return InvalidFilter(f"{source}: only one SELECT reading {TABLE}; found {found}")

    if not isinstance(sql, str) or not sql.strip():
        raise InvalidFilter(f"{source}: empty; give one SELECT reading {TABLE}")
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as error:
        message = _first_line(error).removeprefix("Parser Error: ")
        raise InvalidFilter(f"{source}: does not parse: {message}") from None
    if len(statements) != 1:
        raise refused(f"{len(statements)} statements" if statements else "no statement")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise refused(f"{kind.name} (not a SELECT)")
    tree = _parse(connection, sql)
    if tree.get("error"):
        message = _first_line(tree.get("error_message") or "does not parse")
        if _too_deep(message):
            raise InvalidFilter(f"{source}: {_TOO_DEEP}")
        raise refused("a statement other than SELECT" if "Only SELECT" in message else message)
    if len(tree.get("statements") or []) != 1:
        raise refused("more than one SELECT")
    if tree["statements"][0].get("named_param_map"):
        raise refused("a parameter")
    _Checker(source, refused, None, TABLE, query=True).visit(tree["statements"][0]["node"])


class _Checker:
    """Every node of a parse tree against the grammar: an expression is a dict with a
    ``class``, a query node or table reference one with a known ``type``; everything else is
    searched for those."""

    def __init__(
        self,
        source: str,
        refused: Callable[[str], InvalidFilter],
        columns: Sequence[str] | None,
        relation: str,
        *,
        query: bool,
    ) -> None:
        self.source = source
        self.refused = refused
        self.columns = None if columns is None else list(columns)
        self.known = None if columns is None else {c.lower() for c in columns}
        self.relation = relation
        self.query = query
        self.ctes: set[str] = set()

    def visit(self, node: Any, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise InvalidFilter(f"{self.source}: {_TOO_DEEP}")
        if isinstance(node, list):
            for item in node:
                self.visit(item, depth + 1)
            return
        if not isinstance(node, dict):
            return
        skip: set[str] = set()
        kind = node.get("type") if isinstance(node.get("type"), str) else None
        if "class" in node:
            self.expression(node)
            if node["class"] == "CONSTANT":
                skip = {"value"}
        elif kind in _QUERY_NODES:
            self.query_node(node)
        elif kind in _TABLE_REFS:
            self.table(node)
        elif kind == "UNBOUND_TYPE_INFO":
            self.type_name(node)
        for key, value in node.items():
            if key not in skip:
                self.visit(value, depth + 1)

    def query_node(self, node: dict[str, Any]) -> None:
        if not self.query:
            raise self.refused("a subquery")
        if node["type"] == "RECURSIVE_CTE_NODE":
            raise self.refused("a recursive CTE")
        for entry in (node.get("cte_map") or {}).get("map") or []:
            self.ctes.add(str(entry.get("key", "")).lower())

    def table(self, node: dict[str, Any]) -> None:
        kind = node["type"]
        if not self.query:
            raise self.refused("a table")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if node.get("at_clause"):
                raise self.refused("AT (a time travel clause)")
            if (
                node.get("schema_name") or node.get("catalog_name")
                or (name.lower() != TABLE and name.lower() not in self.ctes)
            ):  # fmt: skip
                qualified = ".".join(
                    p for p in (node.get("catalog_name"), node.get("schema_name"), name) if p
                )
                raise self.refused(f"the table {qualified!r}")
        elif kind == "TABLE_FUNCTION":
            function = (node.get("function") or {}).get("function_name", "?")
            raise self.refused(f"the table function {function}()")
        elif kind not in ("JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "SHOW_REF"):
            raise self.refused(f"a {kind.replace('_', ' ').lower()}")

    def type_name(self, node: dict[str, Any]) -> None:
        """A type in a cast or typed literal must be a built-in one (``'x'::ATTACH`` is not)."""
        name = str(node.get("name", ""))
        if node.get("catalog") or node.get("schema") or name.lower() not in _type_names():
            qualified = ".".join(p for p in (node.get("catalog"), node.get("schema"), name) if p)
            raise self.refused(f"the type {qualified}")

    def expression(self, node: dict[str, Any]) -> None:
        kind = node["class"]
        if kind == "COLUMN_REF":
            self.column(node)
        elif kind == "FUNCTION":
            self.function(node)
        elif kind == "OPERATOR":
            if node.get("type") not in _OPERATORS:
                raise self.refused(f"the operator {str(node.get('type')).lower()}")
        elif kind == "WINDOW" and self.query:
            name = str(node.get("function_name", "")).lower()
            if name not in WINDOW_FUNCTIONS | AGGREGATE_FUNCTIONS:
                raise self.refused(f"the window function {name}()")
        elif kind in ("SUBQUERY", "STAR", "POSITIONAL_REFERENCE") and self.query:
            pass
        elif kind not in _PLAIN:
            raise self.refused(_FOUND.get(kind, kind.replace("_", " ").lower()))

    def column(self, node: dict[str, Any]) -> None:
        if self.known is None:
            return
        names = [str(n) for n in node.get("column_names", [])]
        if len(names) > 1 and names[0].lower() == TABLE and names[0].lower() not in self.known:
            names = names[1:]
        if names and names[0].lower() not in self.known:
            raise InvalidFilter(
                f"{self.source}: {self.relation} has no column {names[0]!r} "
                f"(columns: {', '.join(self.columns or [])})"
            )

    def function(self, node: dict[str, Any]) -> None:
        name = str(node.get("function_name", "")).lower()
        shown = f"the operator {name}" if node.get("is_operator") else f"the function {name}()"
        if node.get("catalog") or node.get("schema") not in ("", "main", None):
            prefix = ".".join(p for p in (node.get("catalog"), node.get("schema")) if p)
            raise self.refused(f"the function {prefix}.{name}()")
        allowed = SCALAR_FUNCTIONS
        if self.query:
            allowed = allowed | AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS
        elif name in AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS:
            raise InvalidFilter(
                f"{self.source}: {name.removesuffix('_star')}() is an aggregate; a filter is a "
                "condition on each row"
            )
        if name not in allowed:
            raise InvalidFilter(
                f"{self.source}: {shown} is not allowed (the allowed functions are listed "
                "under Filters in docs/cli.md)"
            )
        orders = (node.get("order_bys") or {}).get("orders")
        if not self.query and (node.get("filter") or orders or node.get("distinct")):
            raise self.refused(f"FILTER, ORDER BY or DISTINCT inside {name}()")
