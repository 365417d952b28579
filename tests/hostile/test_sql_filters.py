"""User expressions reaching SQL: every filter and query that is more than it may be is refused.

Each case hands a filter (``data show --where``, ``data forget --where``, ``data trace --where``,
a cleaning rule's ``sql:`` through ``data clean``) or a query (``fmforge.data.query``) an
injection, and checks the refusal in one line naming the problem, the repository unchanged,
and that no file was written (``INJECTED*`` in the working directory or the repository).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from fmforge.data import add_dataset, query
from fmforge.errors import InvalidFilter
from fmforge.repository import Repository
from tests.hostile.harness import api_refused, cli_refused

PEOPLE = [
    {"name": "alice", "age": 31, "bio": "likes SQL", "city": "Oslo", "email": "alice@example.org"},
    {"name": "bob", "age": 45, "bio": "reads logs", "city": "Lima", "email": "bob@example.org"},
    {"name": "carol", "age": 27, "bio": "no comment", "city": "Oslo", "email": "c@example.org"},
]
SECOND = "found a second statement"
SUBQUERY = "found a subquery (SELECT)"
PARSE = "does not parse as an expression"


def not_allowed(function: str) -> str:
    return f"the function {function}() is not allowed"


# (case id, filter, what the one line must say). "{out}" is the test's working directory.
FILTERS = [
    # the three defects of issue 11
    ("stacked-copy-of-host-file",
     "1=1; COPY (SELECT * FROM read_text('/etc/hostname')) TO 'INJECTED.csv'; "
     "SELECT * FROM data WHERE 1=1", SECOND),
    ("union-shows-host-file",
     "1=0 UNION ALL SELECT 'x',0,content,'y','z' FROM read_text('/etc/hostname')",
     "found UNION (a second query)"),
    ("stacked-select", "1=1; SELECT _row_id FROM data WHERE name='carol'", SECOND),
    # stacked statements, some hidden by comments or quoting
    ("trailing-semicolon", "age > 1;", "found a ';'"),
    ("stacked-copy-absolute", "age > 1; COPY data TO '{out}/INJECTED.csv'", SECOND),
    ("block-comment-then-statement", "age > 1 /* harmless */; COPY data TO 'INJECTED.csv'", SECOND),
    ("line-comment-then-statement", "age > 1 -- note\n; COPY data TO 'INJECTED.csv'", SECOND),
    ("dollar-quoted-then-statement", "$$;$$ = name; COPY data TO 'INJECTED.csv'", SECOND),
    ("escape-string-then-statement", "e'\\x27' = name; COPY data TO 'INJECTED.csv'", SECOND),
    ("stacked-attach",
     "1=1; ATTACH '{out}/INJECTED.db' AS x; CREATE TABLE x.t AS SELECT 1", SECOND),
    ("stacked-install-load", "1=1; INSTALL httpfs; LOAD httpfs", SECOND),
    ("stacked-pragma", "1=1; PRAGMA version", SECOND),
    ("stacked-set", "1=1; SET enable_external_access = true", SECOND),
    ("stacked-export", "1=1; EXPORT DATABASE '{out}/INJECTED'", SECOND),
    ("stacked-call", "1=1; CALL pragma_version()", SECOND),
    # statements where an expression should be
    ("bare-copy", "COPY data TO 'INJECTED.csv'", PARSE),
    ("bare-pragma", "PRAGMA version", PARSE),
    ("bare-set", "SET enable_external_access = true", PARSE),
    ("bare-install", "INSTALL httpfs", PARSE),
    ("bare-attach", "ATTACH '{out}/INJECTED.db'", "found the type ATTACH"),
    ("bare-load", "LOAD '{out}/INJECTED.duckdb_extension'", "found the type LOAD"),
    ("unclosed-comment", "age > 1 /* the rest", PARSE),
    # breaking out of the parentheses the filter is put in
    ("close-paren-union",
     "true) UNION ALL SELECT * FROM read_csv('/etc/passwd') WHERE (true",
     "found UNION (a second query)"),
    ("close-paren-order-by", "true) ORDER BY (1", "found ORDER BY, LIMIT or DISTINCT"),
    ("close-paren-limit", "true) LIMIT (1", "found ORDER BY, LIMIT or DISTINCT"),
    ("close-paren-group-by", "true) GROUP BY ALL HAVING (true", "found GROUP BY, HAVING"),
    # subqueries and CTEs inside the expression
    ("scalar-subquery", "age = (SELECT 1)", SUBQUERY),
    ("in-subquery-host-file", "name IN (SELECT content FROM read_text('/etc/hostname'))", SUBQUERY),
    ("exists-glob", "EXISTS (SELECT 1 FROM glob('/etc/*'))", SUBQUERY),
    ("from-first-file-path", "name IN (FROM '/etc/passwd')", "found a subquery"),
    ("cte-in-subquery", "(WITH t AS (SELECT 1) SELECT * FROM t) = 1", SUBQUERY),
    ("any-over-list", "name = ANY(['alice'])", "found a subquery"),
    # table and file functions, settings, variables, the environment
    ("read-text-scalar", "read_text('/etc/hostname') IS NOT NULL", not_allowed("read_text")),
    ("read-blob-in-length", "length(read_blob('/etc/shadow')) > 0", not_allowed("read_blob")),
    ("read-csv-path", "read_csv('/etc/passwd') IS NULL", not_allowed("read_csv")),
    ("read-parquet-path", "read_parquet('{out}/x.parquet') IS NULL", not_allowed("read_parquet")),
    ("glob-path", "glob('/etc/*') IS NOT NULL", not_allowed("glob")),
    ("getenv", "getenv('HOME') <> ''", not_allowed("getenv")),
    ("current-setting", "current_setting('home_directory') <> ''", not_allowed("current_setting")),
    ("getvariable", "getvariable('secret') IS NULL", not_allowed("getvariable")),
    ("query-function", "query('COPY data TO ''INJECTED.csv''') IS NULL", not_allowed("query")),
    ("json-execute-sql",
     "json_execute_serialized_sql(json_serialize_sql('SELECT 1')) IS NULL",
     not_allowed("json_execute_serialized_sql")),
    ("sleep", "sleep_ms(60000) IS NULL", not_allowed("sleep_ms")),
    ("catalog-qualified-function", "system.main.lower(name) = 'a'",
     "found the function system.main.lower()"),
    # what is not an expression over the columns
    ("unknown-column", "password IS NOT NULL", "has no column 'password'"),
    ("other-relation-column", "duckdb_settings.value IS NOT NULL",
     "has no column 'duckdb_settings'"),
    ("aggregate", "count(*) > 0", "count() is an aggregate"),
    ("window", "row_number() OVER () = 1", "found a window function (OVER)"),
    ("parameter", "age = $1", "found a parameter"),
    ("star", "COLUMNS(*) IS NOT NULL", "found *"),
    ("lambda", "list_has([name], x -> x = 'alice')", "found a lambda"),
    ("user-type", "age::main.mytype IS NULL", "found the type main.mytype"),
    ("deep-nesting", "abs(" * 400 + "age" + ")" * 400 + " > 0", "nested too deeply"),
    ("empty", "   ", "empty; give one expression"),
]  # fmt: skip
THE_DEFECTS = {"stacked-copy-of-host-file", "union-shows-host-file", "stacked-select"}


@pytest.fixture(scope="module")
def people_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("people")
    source = tmp_path_factory.mktemp("source") / "people.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in PEOPLE))
    with Repository.init(root) as repo:
        add_dataset(repo, "people", source)
    return root


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, people_repo: Path) -> Iterator[Path]:
    """The working directory, where a relative ``COPY ... TO 'INJECTED.csv'`` would land."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for folder in (tmp_path, people_repo):
        assert not list(folder.rglob("INJECTED*")), "an injected statement wrote a file"


def _filter_text(condition: str, out: Path) -> str:
    return condition.replace("{out}", str(out))


SURFACES: dict[str, Callable[[Path, str], list[str]]] = {
    "show": lambda out, c: ["data", "show", "people", "--where", c],
    "forget": lambda out, c: ["data", "forget", "people", "--where", c, "--reason", "test"],
    "trace": lambda out, c: ["data", "trace", "--dataset", "people", "--where", c],
}


@pytest.mark.parametrize(("case", "condition", "problem"), FILTERS, ids=[f[0] for f in FILTERS])
@pytest.mark.parametrize("surface", ["show", "forget"])
def test_where_refused(
    people_repo: Path, out: Path, surface: str, case: str, condition: str, problem: str
) -> None:
    args = SURFACES[surface](out, _filter_text(condition, out))
    line = cli_refused(people_repo, *args)
    assert line.startswith("fmforge: error: --where: "), line
    assert problem in line, f"{problem!r} not in {line!r}"


@pytest.mark.parametrize(
    ("case", "condition", "problem"),
    [f for f in FILTERS if f[0] in THE_DEFECTS],
    ids=sorted(THE_DEFECTS, key=[f[0] for f in FILTERS].index),
)
def test_trace_where_refused(
    people_repo: Path, out: Path, case: str, condition: str, problem: str
) -> None:
    line = cli_refused(people_repo, *SURFACES["trace"](out, _filter_text(condition, out)))
    assert problem in line, f"{problem!r} not in {line!r}"


@pytest.mark.parametrize(("case", "condition", "problem"), FILTERS, ids=[f[0] for f in FILTERS])
def test_cleaning_rule_sql_refused(
    people_repo: Path, out: Path, case: str, condition: str, problem: str
) -> None:
    rules = out / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"drop": {"sql": _filter_text(condition, out)}}]}))
    line = cli_refused(people_repo, "data", "clean", "people", "-r", str(rules), "--apply")
    assert line.startswith("fmforge: error: rule drop: sql "), line
    assert problem in line, f"{problem!r} not in {line!r}"


def test_cleaning_rule_sql_must_be_text(people_repo: Path, out: Path) -> None:
    rules = out / "rules.yaml"
    rules.write_text("rules:\n  - drop: {sql: [1, 2]}\n")
    line = cli_refused(people_repo, "data", "clean", "people", "-r", str(rules), "--apply")
    assert "option 'sql' must be an SQL condition (a string), not a list" in line


# (case id, query, what the one line must say)
QUERIES = [
    ("stacked-copy", "SELECT 1; COPY data TO 'INJECTED.csv'", "found 2 statements"),
    ("copy", "COPY data TO '{out}/INJECTED.csv'", "found COPY (not a SELECT)"),
    ("union-host-file",
     "SELECT * FROM data UNION ALL SELECT 'x',0,content,'y','z' FROM read_text('/etc/hostname')",
     "found the table function read_text()"),
    ("read-text", "SELECT * FROM read_text('/etc/hostname')",
     "found the table function read_text()"),
    ("read-csv", "SELECT * FROM read_csv('/etc/passwd')", "found the table function read_csv()"),
    ("read-parquet", "SELECT * FROM read_parquet('{out}/x.parquet')",
     "found the table function read_parquet()"),
    ("glob", "SELECT * FROM glob('/etc/*')", "found the table function glob()"),
    ("file-path-as-table", "SELECT * FROM '/etc/passwd'", "found the table '/etc/passwd'"),
    ("settings", "SELECT * FROM duckdb_settings()", "found the table function duckdb_settings()"),
    ("query-function", "SELECT * FROM data, query('SELECT 1')", "found the table function query()"),
    ("json-execute", "FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
     "found the table function json_execute_serialized_sql()"),
    ("subquery-host-file",
     "SELECT * FROM data WHERE name IN (SELECT content FROM read_text('/etc/hostname'))",
     "found the table function read_text()"),
    ("cte-host-file", "WITH t AS (SELECT * FROM read_text('/etc/hostname')) SELECT * FROM t",
     "found the table function read_text()"),
    ("recursive-cte", "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) "
     "SELECT * FROM t", "found a recursive CTE"),
    ("describe-file", "DESCRIBE SELECT * FROM read_csv('/etc/passwd')",
     "found the table function read_csv()"),
    ("other-table", "SELECT * FROM data, people", "found the table 'people'"),
    ("schema-qualified", "SELECT * FROM main.data", "found the table 'main.data'"),
    ("time-travel", "SELECT * FROM data AT (VERSION => 1)", "found AT (a time travel clause)"),
    ("attach", "ATTACH '{out}/INJECTED.db'", "found ATTACH (not a SELECT)"),
    ("pragma", "PRAGMA version", "found a statement other than SELECT"),
    ("set", "SET enable_external_access = true", "found SET (not a SELECT)"),
    ("install", "INSTALL httpfs", "(not a SELECT)"),
    ("load", "LOAD httpfs", "found LOAD (not a SELECT)"),
    ("create", "CREATE TABLE t AS SELECT * FROM data", "found CREATE (not a SELECT)"),
    ("export", "EXPORT DATABASE '{out}/INJECTED'", "found EXPORT (not a SELECT)"),
    ("call", "CALL pragma_version()", "(not a SELECT)"),
    ("comment-hides-statement", "SELECT * FROM data /* x */; DETACH memory", "found 2 statements"),
    ("getenv", "SELECT getenv('HOME')", not_allowed("getenv")),
    ("current-setting", "SELECT current_setting('home_directory')", not_allowed("current_setting")),
    ("parameter", "SELECT * FROM data WHERE age = $1", "found a parameter"),
    ("empty", "", "empty; give one SELECT"),
    ("typo", "SELEC * FROM data", "does not parse"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "sql", "problem"), QUERIES, ids=[q[0] for q in QUERIES])
def test_query_refused(people_repo: Path, out: Path, case: str, sql: str, problem: str) -> None:
    def run() -> None:
        with Repository.open(people_repo) as repo:
            query(repo, "people", _filter_text(sql, out))

    error = api_refused(people_repo, run, InvalidFilter, contains=problem)
    assert str(error).startswith("query on people: "), str(error)


def test_a_filter_still_works_after_the_refusals(people_repo: Path, out: Path) -> None:
    with Repository.open(people_repo) as repo:
        rows = query(repo, "people", "SELECT name FROM data WHERE city = 'Oslo' ORDER BY name")
    assert rows.to_pylist() == [{"name": "alice"}, {"name": "carol"}]
