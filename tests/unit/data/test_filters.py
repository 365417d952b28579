"""The filter checker: allowed expressions select the right rows; anything else is refused."""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa
import pytest

from fmforge.data.filters import (
    AGGREGATE_FUNCTIONS,
    SCALAR_FUNCTIONS,
    WINDOW_FUNCTIONS,
    check_filter,
    check_query,
    connect,
    mask,
    run_query,
    select,
)
from fmforge.errors import InvalidFilter

PEOPLE = pa.table(
    {
        "name": ["alice", "bob", "carol", "dave"],
        "label": [1, 0, None, 1],
        "text": ["a long enough text", "short", "xylophone solo", None],
        "author": ["Bobby T", "bob", "Carol", "BOB ross"],
        "home town": ["Oslo", "Lima", "Oslo", "Quito"],
        "born": [date(1990, 1, 2), date(1985, 6, 7), date(2001, 3, 4), date(1990, 12, 31)],
        "tags": [["a", "b"], [], ["c"], None],
    }
)


class TestAllowedFilters:
    @pytest.mark.parametrize(
        ("condition", "names"),
        [
            ("label = 1", ["alice", "dave"]),
            ("length(text) > 10 AND author ILIKE '%bob%'", ["alice"]),
            ("lower(name) IN ('alice', 'bob')", ["alice", "bob"]),
            ("regexp_matches(text, 'x')", ["alice", "carol"]),
            ("\"home town\" = 'Oslo'", ["alice", "carol"]),
            ("\"HOME TOWN\" = 'Lima'", ["bob"]),  # names match as DuckDB matches them
            ("data.label = 0", ["bob"]),
            ("label IS NULL OR text IS NULL", ["carol", "dave"]),
            ("label BETWEEN 0 AND 0", ["bob"]),
            ("name NOT LIKE '%a%'", ["bob"]),
            ("text SIMILAR TO 'x.*'", ["carol"]),
            ("name GLOB 'c*'", ["carol"]),
            ("CASE WHEN label = 1 THEN name ELSE 'z' END = 'dave'", ["dave"]),
            ("CAST(label AS VARCHAR) || name = '1alice'", ["alice"]),
            ("label::DOUBLE / 2 + 1 * 3 - 0.5 >= 3", ["alice", "dave"]),
            ("coalesce(label, 7) = 7", ["carol"]),
            ("born < DATE '1990-01-01'", ["bob"]),
            ("year(born) = 1990 AND month(born) = 12", ["dave"]),
            ("born + INTERVAL 1 DAY = DATE '2001-03-05'", ["carol"]),
            ("list_contains(tags, 'b')", ["alice"]),
            ("tags[1] = 'c'", ["carol"]),
            ("len(tags) = 0", ["bob"]),
            ("name IN ['bob', 'dave']", ["bob", "dave"]),
            ("levenshtein(name, 'alicia') <= 2", ["alice"]),
            ("label IS DISTINCT FROM 1", ["bob", "carol"]),
            ("NOT (label = 1)", ["bob"]),
            ("name = 'alice' -- a comment at the end", ["alice"]),
            ("/* a comment */ name = 'bob'", ["bob"]),
            ("name LIKE 'a;%' OR name = 'carol'", ["carol"]),  # a ';' inside a string
            ("\"name\" = 'select' OR name = 'dave'", ["dave"]),
            ("starts_with(author, 'BOB') AND NOT contains(text, 'x')", []),
            ("author COLLATE nocase = 'carol'", ["carol"]),
        ],
    )
    def test_selects_the_matching_rows(self, condition: str, names: list[str]) -> None:
        assert select(PEOPLE, condition).column("name").to_pylist() == names
        hits = mask(PEOPLE, condition)
        assert [n for n, hit in zip(PEOPLE["name"].to_pylist(), hits, strict=True) if hit] == names

    def test_the_checked_text_is_the_text_that_runs(self) -> None:
        assert check_filter("label = 1", ["label"]) == "SELECT * FROM data WHERE (\nlabel = 1\n)"

    def test_columns_are_checked_only_when_given(self) -> None:
        check_filter("anything = 1")
        with pytest.raises(InvalidFilter, match=r"^--where: people has no column 'anything' "):
            check_filter("anything = 1", ["name"], relation="people")

    def test_a_column_named_like_the_position_column_does_not_collide(self) -> None:
        table = pa.table({"_position": [5, 6, 7], "__POSITION": [1, 1, 0]})
        assert mask(table, "_position > 5 AND __position = 1") == [False, True, False]

    def test_null_counts_as_false(self) -> None:
        assert mask(PEOPLE, "label = 1") == [True, False, False, True]


class TestRefusedFilters:
    @pytest.mark.parametrize(
        ("condition", "problem"),
        [
            ("name = 'a'; DROP TABLE data", "found a second statement"),
            ("name = 'a';", "found a ';'"),
            ("1=0 UNION ALL SELECT * FROM data", "found UNION (a second query)"),
            ("label IN (SELECT 1)", "found a subquery (SELECT)"),
            ("label = ANY([1])", "found a subquery"),
            ("true) ORDER BY (1", "found ORDER BY, LIMIT or DISTINCT"),
            ("true) GROUP BY ALL HAVING (true", "found GROUP BY, HAVING"),
            ("read_text('/etc/hostname') IS NULL", "the function read_text() is not allowed"),
            ("current_setting('threads') > 0", "the function current_setting() is not allowed"),
            ("sum(label) > 1", "sum() is an aggregate"),
            ("count(*) > 1", "count() is an aggregate"),
            ("row_number() OVER () = 1", "found a window function (OVER)"),
            ("list_has(tags, x -> x = 'a')", "found a lambda"),
            ("label = $1", "found a parameter"),
            ("label = ?", "found a parameter"),
            ("COLUMNS(*) IS NULL", "found *"),
            ("#1 = 1", "found a positional reference"),
            ("system.main.lower(name) = 'a'", "found the function system.main.lower()"),
            ("ATTACH '/tmp/x.db'", "found the type ATTACH"),
            ("nope = 1", "people has no column 'nope'"),
            ("name = 'unterminated", "does not parse as an expression: unterminated quoted string"),
            ("", "empty; give one expression over the columns of people"),
            ("abs(" * 300 + "label" + ")" * 300 + " > 0", "nested too deeply"),
            ("label" + " + label" * 3000 + " > 0", "nested too deeply"),
            ("label = 'abc'", "Conversion Error"),  # found when it runs: still one line
        ],
    )
    def test_refused_in_one_line(self, condition: str, problem: str) -> None:
        with pytest.raises(InvalidFilter) as caught:
            select(PEOPLE, condition, relation="people")
        message = str(caught.value)
        assert message.startswith("--where: "), message
        assert problem in message, message
        assert len(message.splitlines()) == 1, message

    def test_the_source_names_the_option(self) -> None:
        with pytest.raises(InvalidFilter, match=r"^rule drop: sql: found|^rule drop: sql: only"):
            check_filter("1; SELECT 1", source="rule drop: sql")


class TestQueries:
    @pytest.mark.parametrize(
        ("sql", "rows"),
        [
            ("SELECT count(*) AS n FROM data WHERE label = 1", [{"n": 2}]),
            ("SELECT label, count(*) AS n FROM data GROUP BY label ORDER BY label NULLS LAST",
             [{"label": 0, "n": 1}, {"label": 1, "n": 2}, {"label": None, "n": 1}]),
            ("WITH o AS (SELECT * FROM data WHERE \"home town\" = 'Oslo') SELECT name FROM o",
             [{"name": "alice"}, {"name": "carol"}]),
            ("SELECT name FROM data WHERE label IN (SELECT max(label) FROM data) ORDER BY 1",
             [{"name": "alice"}, {"name": "dave"}]),
            ("SELECT a.name FROM data a JOIN data b ON a.name = b.name WHERE a.label = 0",
             [{"name": "bob"}]),
            ("SELECT name, row_number() OVER (ORDER BY name DESC) AS r FROM data LIMIT 1",
             [{"name": "dave", "r": 1}]),
            ("FROM data SELECT name WHERE label = 0;", [{"name": "bob"}]),
        ],
    )  # fmt: skip
    def test_reads_data(self, sql: str, rows: list[dict[str, object]]) -> None:
        assert run_query(PEOPLE, sql).to_pylist() == rows

    @pytest.mark.parametrize(
        ("sql", "problem"),
        [
            ("SELECT 1; SELECT 2", "found 2 statements"),
            ("COPY data TO 'x.csv'", "found COPY (not a SELECT)"),
            ("SELECT * FROM read_text('/etc/hostname')", "found the table function read_text()"),
            ("SELECT * FROM '/etc/passwd'", "found the table '/etc/passwd'"),
            ("SELECT * FROM other", "found the table 'other'"),
            ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT * FROM t",
             "found a recursive CTE"),
            ("SELECT getvariable('x')", "the function getvariable() is not allowed"),
            ("SELEC 1", "does not parse: syntax error"),
        ],
    )  # fmt: skip
    def test_refused_in_one_line(self, sql: str, problem: str) -> None:
        with pytest.raises(InvalidFilter) as caught:
            check_query(sql)
        assert problem in str(caught.value), str(caught.value)
        assert len(str(caught.value).splitlines()) == 1


class TestTheWall:
    """What runs runs on a connection that reaches nothing outside, whatever got past."""

    @pytest.mark.parametrize(
        "statement",
        [
            "SELECT * FROM read_text('/etc/hostname')",
            "COPY (SELECT 1) TO 'INJECTED.csv'",
            "ATTACH '/tmp/fmforge-injected.db'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET enable_external_access = true",
            "SELECT * FROM PEOPLE",  # no Python variable is visible as a table
        ],
    )
    def test_the_connection_refuses(self, statement: str) -> None:
        connection = connect()
        try:
            with pytest.raises(duckdb.Error):
                connection.execute(statement)
        finally:
            connection.close()

    def test_every_allowed_function_exists(self) -> None:
        connection = connect()
        try:
            rows = connection.execute("SELECT function_name FROM duckdb_functions()").fetchall()
        finally:
            connection.close()
        names = {row[0] for row in rows}
        assert sorted(SCALAR_FUNCTIONS - names) == []
        assert sorted((AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS) - names) == []
