"""Hostile cleaning rules and labeling functions: every wrong YAML, option, module, regex or
column is refused in one line naming the rule or LF (and its option or field), with the
repository unchanged; a replacement is text, never a template; a clean that changes nothing
records nothing."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fmforge.data import add_dataset, dataset_log, read_table
from fmforge.data.cleaning import apply_cleaning, load_rules
from fmforge.data.labeling.functions import apply_lfs, load_lfs, stale_lfs
from fmforge.errors import CleaningError, LabelingError
from fmforge.repository import Repository
from tests.clirunner import fm
from tests.hostile.harness import api_refused, cli_refused, unchanged

ROWS = [
    {"text": "mail me at jo@example.com", "label": 1},
    {"text": "great song", "label": 0},
    {"text": "a" * 40 + "!", "label": 0},  # makes (a|aa)+$ backtrack for ages
    {"text": "subscribe to my channel", "label": 1},
]

LAUGHS = "\n".join(
    [
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(
            f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository with the dataset ``t`` (ROWS)."""
    path = tmp_path / "repo"
    path.mkdir()
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with Repository.init(path) as repo:
        add_dataset(repo, "t", source)
    return path


@dataclass(frozen=True)
class Case:
    name: str
    yaml: str | bytes
    contains: str
    files: dict[str, str] = field(default_factory=dict)  # beside the YAML file


def rules(*entries: str, column: str | None = None) -> str:
    head = f"column: {column}\n" if column is not None else ""
    return head + "rules:\n" + "".join(f"  - {e}\n" for e in entries)


def module(name: str, code: str) -> dict[str, str]:
    return {f"{name}.py": textwrap.dedent(code)}


RULES = [
    # option types and ranges, checked before anything runs
    Case(
        "near_dedup_threshold_text",
        rules('near_dedup: {threshold: "abc"}'),
        "rule 1 (near_dedup): option 'threshold' must be a number in (0, 1], not 'abc'",
    ),
    Case(
        "near_dedup_threshold_quoted_number",
        rules('near_dedup: {threshold: "0.8"}'),
        "option 'threshold' must be a number in (0, 1], not '0.8'",
    ),
    Case("near_dedup_threshold_zero", rules("near_dedup: {threshold: 0}"), "not 0"),
    Case("near_dedup_threshold_above_one", rules("near_dedup: {threshold: 1.5}"), "not 1.5"),
    Case("near_dedup_threshold_nan", rules("near_dedup: {threshold: .nan}"), "'threshold'"),
    Case(
        "near_dedup_permutations_zero",
        rules("near_dedup: {permutations: 0}"),
        "option 'permutations' must be an integer from 1 to 1024, not 0",
    ),
    Case(
        "near_dedup_permutations_float",
        rules("near_dedup: {permutations: 64.5}"),
        "'permutations' must be an integer",
    ),
    Case(
        "near_dedup_shingle_bool",
        rules("near_dedup: {shingle: true}"),
        "option 'shingle' must be an integer from 1 to 100, not True",
    ),
    Case(
        "near_dedup_unknown_option",
        rules("near_dedup: {treshold: 0.9}"),
        "unknown option 'treshold' (options: threshold, permutations, shingle)",
    ),
    Case(
        "drop_min_length_text",
        rules('drop: {min_length: "ten"}'),
        "rule 1 (drop): option 'min_length' must be an integer of 0 or more, not 'ten'",
    ),
    Case("drop_min_length_negative", rules("drop: {min_length: -1}"), "not -1"),
    Case("drop_max_length_float", rules("drop: {max_length: 1.5}"), "'max_length'"),
    Case(
        "drop_min_above_max",
        rules("drop: {min_length: 10, max_length: 5}"),
        "min_length 10 is above max_length 5",
    ),
    Case("drop_without_options", rules("drop: {}"), "rule 1 (drop): give one or more of"),
    Case("drop_null_options", rules("drop:"), "give one or more of"),
    Case("drop_unknown_option", rules('drop: {regexp: "x"}'), "unknown option 'regexp'"),
    Case(
        "drop_keywords_as_text",
        rules('drop: {keywords: "spam"}'),
        "option 'keywords' must be a list of one or more non-empty strings, not 'spam'",
    ),
    Case("drop_keywords_empty", rules("drop: {keywords: []}"), "'keywords' must be a list"),
    Case("drop_keywords_empty_word", rules('drop: {keywords: [""]}'), "'keywords'"),
    Case("drop_keywords_numbers", rules("drop: {keywords: [1, 2]}"), "'keywords'"),
    Case("drop_regex_not_text", rules("drop: {regex: [a]}"), "option 'regex' must be a regular"),
    Case(
        "drop_regex_invalid",
        rules('drop: {regex: "("}'),
        "rule 1 (drop): option 'regex': bad regex '('",
    ),
    Case("drop_regex_bad_escape", rules('drop: {regex: "\\\\"}'), "bad regex"),
    Case(
        "drop_regex_too_long",
        rules(f'drop: {{regex: "{"a" * 5000}"}}'),
        "regex longer than 4,096 characters",
    ),
    Case(
        "drop_regex_catastrophic",
        rules('drop: {regex: "(a|aa)+$"}'),
        "rule 1 (drop): option 'regex': regex '(a|aa)+$' ran over 2 s",
    ),
    Case("drop_sql_not_text", rules("drop: {sql: 5}"), "option 'sql' must be an SQL condition"),
    Case(
        "dedup_mode_unknown",
        rules("dedup: {mode: fuzzy}"),
        "option 'mode' must be exact or normalized",
    ),
    Case(
        "drop_empty_with_options",
        rules("drop_empty: {column: text, x: 1}"),
        "rule 1 (drop_empty): unknown option 'x' (options: none)",
    ),
    Case(
        "redact_unknown_kind",
        rules("redact: {kinds: [ssn]}"),
        "option 'kinds' must be a list of email, url, ip, credit_card, phone, not a list",
    ),
    Case("redact_kinds_as_text", rules("redact: {kinds: email}"), "'kinds'"),
    Case("redact_kinds_empty", rules("redact: {kinds: []}"), "'kinds'"),
    Case(
        "redact_replacement_number",
        rules("redact: {replacement: 5}"),
        "option 'replacement' must be a string",
    ),
    Case("language_keep_missing", rules("language: {}"), "option 'keep' is required"),
    Case("language_keep_text", rules("language: {keep: en}"), "'keep' must be a list"),
    Case(
        "language_probability_above_one",
        rules("language: {keep: [en], min_probability: 2}"),
        "'min_probability' must be a number from 0 to 1, not 2",
    ),
    Case(
        "column_not_text",
        rules("drop_empty: {column: 5}"),
        "option 'column' must be a column name, not 5",
    ),
    Case(
        "column_missing_in_data",
        rules("drop_empty: {}", column="body"),
        "rule 1 (drop_empty): no column 'body' (columns: text, label)",
    ),
    Case(
        "top_column_a_list",
        rules("drop_empty: {}", column="[a, b]"),
        "'column' must be a column name, not a list",
    ),
    # the shape of the file
    Case("unknown_kind", rules("squash: {}"), "rule 1: unknown kind 'squash' (known: drop_empty"),
    Case(
        "two_kinds_in_one_entry",
        rules("drop_empty: {}\n    dedup: {}"),
        "rule 1: write each rule as 'kind: {options}'",
    ),
    Case("entry_a_string", rules("drop_empty"), "rule 1: write each rule as"),
    Case(
        "options_a_list",
        rules("drop_empty: [1]"),
        "rule 1 (drop_empty): options must be a mapping, not a list",
    ),
    Case("options_with_number_key", rules("drop: {1: 2}"), "option names must be strings"),
    Case("yaml_a_list", "- drop_empty: {}\n", "expected a mapping with a 'rules' list"),
    Case("yaml_a_string", "just text\n", "expected a mapping with a 'rules' list"),
    Case("yaml_empty", "", "expected a mapping with a 'rules' list"),
    Case("rules_not_a_list", "rules: {drop_empty: {}}\n", "expected a mapping with a 'rules'"),
    Case("rules_empty", "rules: []\n", "the 'rules' list is empty"),
    Case(
        "unknown_top_key",
        "rule: []\nrules: [drop_empty: {}]\n",
        "unknown key 'rule' (keys: column, rules)",
    ),
    Case("yaml_syntax", "rules:\n  - drop: {regex: [\n", "line 3, column 1: not valid YAML"),
    Case("yaml_tab", "rules:\n\t- drop_empty: {}\n", "not valid YAML (found character"),
    Case(
        "yaml_python_tag",
        '!!python/object/apply:os.system ["touch pwned"]\n',
        "not valid YAML (could not determine a constructor",
    ),
    Case("yaml_not_utf8", b"rules:\n  - drop: {regex: caf\xe9}\n", "not valid YAML"),
    Case(
        "yaml_billion_laughs",
        LAUGHS + "\nrules:\n  - drop: {keywords: *i}\n",
        "anchors and aliases expand to more than 100,000 values",
    ),
    Case("yaml_recursive_alias", "rules: &r [*r]\n", "expand to more than 100,000 values"),
    # python rules: only the user's own plain functions
    Case(
        "python_os_system",
        rules('python: {function: "os:system"}'),
        "rule 1 (python): function 'os:system': os is part of the Python standard library",
    ),
    Case("python_subprocess", rules('python: {function: "subprocess:run"}'), "standard library"),
    Case("python_builtins_eval", rules('python: {function: "builtins:eval"}'), "standard library"),
    Case(
        "python_stdlib_submodule", rules('python: {function: "os.path:join"}'), "standard library"
    ),
    Case("python_antigravity", rules('python: {function: "antigravity:fly"}'), "standard library"),
    Case(
        "python_fmforge",
        rules('python: {function: "fmforge.data.cleaning:load_rules"}'),
        "fmforge.data.cleaning is fmforge's own code",
    ),
    Case(
        "python_installed_package",
        rules('python: {function: "yaml:safe_load"}'),
        "yaml is an installed package",
    ),
    Case(
        "python_no_colon",
        rules('python: {function: "my_rules.drop"}'),
        "write it as MODULE:FUNCTION",
    ),
    Case(
        "python_code_injection",
        rules('python: {function: "x:y; import os"}'),
        "write it as MODULE:FUNCTION",
    ),
    Case("python_function_missing", rules("python: {}"), "option 'function' is required"),
    Case(
        "python_no_such_module",
        rules('python: {function: "nomodule_xyz:f"}'),
        "no module 'nomodule_xyz'",
    ),
    Case(
        "python_no_such_function",
        rules('python: {function: "r_missing:nope"}'),
        "r_missing has no 'nope'",
        module("r_missing", "def other(table, column):\n    return []\n"),
    ),
    Case(
        "python_imported_builtin",
        rules('python: {function: "r_builtin:system"}'),
        "system is not a function",
        module("r_builtin", "from os import system\n"),
    ),
    Case(
        "python_imported_function",
        rules('python: {function: "r_imported:rmtree"}'),
        "rmtree is imported from elsewhere",
        module("r_imported", "from shutil import rmtree\n"),
    ),
    Case(
        "python_class",
        rules('python: {function: "r_class:Rule"}'),
        "Rule is not a function",
        module("r_class", "class Rule:\n    def __init__(self, table, column): pass\n"),
    ),
    Case(
        "python_callable_object",
        rules('python: {function: "r_object:f"}'),
        "not a function",
        module("r_object", "import functools\nf = functools.partial(print)\n"),
    ),
    Case(
        "python_wrong_signature",
        rules('python: {function: "r_sig:f"}'),
        "must take (table, column)",
        module("r_sig", "def f(table):\n    return []\n"),
    ),
    Case(
        "python_import_fails",
        rules('python: {function: "r_broken:f"}'),
        "importing r_broken failed: ZeroDivisionError: division by zero",
        module("r_broken", "1 / 0\n"),
    ),
    Case(
        "python_function_raises",
        rules('python: {function: "r_raises:f"}'),
        'rule 1 (python): r_raises:f raised KeyError: \'Field "body" does not exist',
        module("r_raises", "def f(table, column):\n    return table['body']\n"),
    ),
    Case(
        "python_wrong_length",
        rules('python: {function: "r_length:f"}'),
        "r_length:f returned 1 flags for 4 rows",
        module("r_length", "def f(table, column):\n    return [True]\n"),
    ),
    Case(
        "python_not_bools",
        rules('python: {function: "r_flags:f"}'),
        "r_flags:f returned 'yes' for row 1: return True (drop) or False (keep)",
        module("r_flags", "def f(table, column):\n    return ['yes'] * table.num_rows\n"),
    ),
    Case(
        "python_returns_none",
        rules('python: {function: "r_none:f"}'),
        "r_none:f raised TypeError",
        module("r_none", "def f(table, column):\n    return None\n"),
    ),
]


def _write(folder: Path, case: Case, filename: str) -> Path:
    for name, code in case.files.items():
        (folder / name).write_text(code)
    path = folder / filename
    if isinstance(case.yaml, bytes):
        path.write_bytes(case.yaml)
    else:
        path.write_text(case.yaml)
    return path


@pytest.mark.parametrize("case", RULES, ids=[case.name for case in RULES])
def test_rules_are_refused(root: Path, tmp_path: Path, case: Case) -> None:
    path = _write(tmp_path, case, "rules.yaml")
    line = cli_refused(root, "data", "clean", "t", "-r", str(path), "--apply",
                       contains=case.contains)  # fmt: skip
    assert "rule" in line or str(path) in line, line
    assert not (tmp_path / "pwned").exists()


def test_a_rules_file_that_is_a_directory_or_missing(root: Path, tmp_path: Path) -> None:
    cli_refused(root, "data", "clean", "t", "-r", str(tmp_path), contains="is a directory")
    cli_refused(root, "data", "clean", "t", "-r", str(tmp_path / "no.yaml"),
                contains="no.yaml: No such file")  # fmt: skip


def test_the_api_refuses_the_same_way(root: Path) -> None:
    with Repository.open(root) as repo:
        api_refused(root, lambda: load_rules('rules:\n  - drop: {min_length: "ten"}\n'),
                    CleaningError, "option 'min_length'")  # fmt: skip
        spec = {"rules": [{"python": {"function": "os:system"}}]}
        api_refused(root, lambda: apply_cleaning(repo, "t", load_rules(spec)), CleaningError,
                    "standard library")  # fmt: skip


# -- replacement is text, never a template ---------------------------------------------------


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        ("{0.__class__}", "mail me at {0.__class__}"),
        ("{kind.__class__.__mro__}", "mail me at {kind.__class__.__mro__}"),
        ("\\g<0>", "mail me at \\g<0>"),  # not the matched address again
        ("\\1", "mail me at \\1"),
        ("<{kind}>", "mail me at <EMAIL>"),
        ("{{kind}}", "mail me at {EMAIL}"),
    ],
)
def test_redact_replacement_is_literal(root: Path, replacement: str, expected: str) -> None:
    with Repository.open(root) as repo:
        spec = {"rules": [{"redact": {"kinds": ["email"], "replacement": replacement}}]}
        _, result = apply_cleaning(repo, "t", load_rules(spec))
        assert result.created
        assert read_table(repo, "t").column("text").to_pylist()[0] == expected


# -- a clean that records nothing adds nothing -----------------------------------------------


def test_a_clean_that_changes_nothing_records_nothing(root: Path, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(rules('drop: {keywords: ["never-in-the-data"]}'))
    with unchanged(root):
        code, out = fm(root, "data", "clean", "t", "-r", str(tmp_path / "r.yaml"), "--apply")
    assert code == 0, out
    assert "the rules change nothing: no version recorded" in out


def test_a_clean_of_an_old_version_giving_the_newest_rows_records_nothing(root: Path) -> None:
    spec = {"rules": [{"drop": {"keywords": ["subscribe"]}}]}
    with Repository.open(root) as repo:
        _, first = apply_cleaning(repo, "t", load_rules(spec))
        assert first.created
    with unchanged(root), Repository.open(root) as repo:
        _, again = apply_cleaning(repo, "t@v1", load_rules(spec))
        assert not again.created
        assert again.version.id == first.version.id
        assert [v.number for v in dataset_log(repo, "t")] == [2, 1]


def test_a_python_rule_of_the_users_own_module_runs(root: Path, tmp_path: Path) -> None:
    (tmp_path / "mine_ok.py").write_text(
        "def short(table, column):\n"
        "    return [len(t) < 12 for t in table.column(column).to_pylist()]\n"
    )
    (tmp_path / "r.yaml").write_text(rules('python: {function: "mine_ok:short"}'))
    code, out = fm(root, "data", "clean", "t", "-r", str(tmp_path / "r.yaml"), "--apply")
    assert code == 0, out
    with Repository.open(root) as repo:
        assert "great song" not in read_table(repo, "t").column("text").to_pylist()


# -- labeling functions ----------------------------------------------------------------------


def lfs(*entries: str, labels: str = "[ham, spam]", column: str | None = None) -> str:
    head = f"labels: {labels}\n" + (f"column: {column}\n" if column is not None else "")
    return (
        head
        + "lfs:\n"
        + "".join("  - " + textwrap.indent(e, "    ").lstrip() + "\n" for e in entries)
    )


KW = "name: kw\nkeywords: [subscribe]\nlabel: spam"
LFS = [
    Case(
        "lf_column_missing",
        lfs("name: kw\nkeywords: [subscribe]\nlabel: spam\ncolumn: body"),
        "LF 1 (kw): reads column 'body', which t@v1 does not have (columns: text, label)",
    ),
    Case("lf_default_column_missing", lfs(KW, column="body"), "reads column 'body'"),
    Case("lf_yaml_a_list", "- name: kw\n", "expected 'labels' (class names) and an 'lfs' list"),
    Case("lf_yaml_empty", "", "expected 'labels'"),
    Case("lf_labels_missing", "lfs:\n  - name: kw\n", "expected 'labels'"),
    Case("lf_labels_yes_no", lfs(KW, labels="[yes, no]"), "quote yes/no/true/false"),
    Case("lf_labels_nested", lfs(KW, labels="[[a], b]"), "'labels' must be a list of class names"),
    Case("lf_labels_one", lfs(KW, labels="[spam]"), "two or more distinct classes"),
    Case("lf_labels_repeated", lfs(KW, labels="[spam, spam]"), "two or more distinct classes"),
    Case("lf_unknown_top_key", lfs(KW) + "colum: text\n", "unknown key 'colum'"),
    Case("lf_lfs_empty", "labels: [ham, spam]\nlfs: []\n", "the 'lfs' list is empty"),
    Case("lf_column_a_number", lfs(KW, column="5"), "'column' must be a column name, not 5"),
    Case("lf_entry_a_string", lfs('"kw"'), "LF 1: fields must be a mapping"),
    Case("lf_no_name", lfs("keywords: [a]\nlabel: spam"), "LF 1: field 'name' is required"),
    Case(
        "lf_name_a_number",
        lfs("name: 5\nkeywords: [a]\nlabel: spam"),
        "field 'name' must be a non-empty string",
    ),
    Case("lf_name_empty", lfs('name: ""\nkeywords: [a]\nlabel: spam'), "LF 1: field 'name'"),
    Case(
        "lf_unknown_field",
        lfs("name: kw\nkeyword: [a]\nlabel: spam"),
        "LF 1 (kw): unknown field 'keyword' (fields: name, label",
    ),
    Case(
        "lf_keywords_text",
        lfs("name: kw\nkeywords: subscribe\nlabel: spam"),
        "field 'keywords' must be a list of one or more non-empty strings, not 'subscribe'",
    ),
    Case("lf_keywords_empty", lfs("name: kw\nkeywords: []\nlabel: spam"), "field 'keywords'"),
    Case(
        "lf_two_kinds",
        lfs("name: kw\nkeywords: [a]\nregex: a\nlabel: spam"),
        "give exactly one of keywords, regex, exemplars, min/max (threshold) or default",
    ),
    Case("lf_no_kind", lfs("name: kw\nlabel: spam"), "give exactly one of"),
    Case("lf_no_label", lfs("name: kw\nkeywords: [a]"), "needs the label it votes"),
    Case(
        "lf_label_unknown",
        lfs("name: kw\nkeywords: [a]\nlabel: eggs"),
        "votes 'eggs', not one of ham, spam",
    ),
    Case("lf_label_a_list", lfs("name: kw\nkeywords: [a]\nlabel: [spam]"), "field 'label'"),
    Case("lf_regex_invalid", lfs("name: re\nregex: '('\nlabel: spam"), "LF 1 (re): bad regex '('"),
    Case(
        "lf_regex_catastrophic",
        lfs("name: re\nregex: '(a|aa)+$'\nlabel: spam"),
        "LF 1 (re): regex '(a|aa)+$' ran over 2 s",
    ),
    Case(
        "lf_ignore_case_text",
        lfs("name: re\nregex: a\nignore_case: 'no'\nlabel: spam"),
        "field 'ignore_case' must be true or false, not 'no'",
    ),
    Case(
        "lf_ignore_case_on_keywords",
        lfs(KW + "\nignore_case: false"),
        "ignore_case applies to regex LFs only",
    ),
    Case(
        "lf_threshold_on_keywords",
        lfs(KW + "\nthreshold: 0.5"),
        "threshold applies to exemplars LFs only",
    ),
    Case(
        "lf_threshold_out_of_range",
        lfs("name: ex\nexemplars: {spam: [x]}\nthreshold: 3"),
        "field 'threshold' must be a number from -1 to 1, not 3",
    ),
    Case(
        "lf_exemplars_unknown_label",
        lfs("name: ex\nexemplars: {eggs: [x]}"),
        "exemplars for 'eggs', not one of ham, spam",
    ),
    Case("lf_exemplars_not_texts", lfs("name: ex\nexemplars: {spam: x}"), "field 'exemplars'"),
    Case("lf_names_repeated", lfs(KW, KW), "lfs.yaml: LF names must be unique: kw"),
    Case(
        "lf_billion_laughs",
        LAUGHS + "\nlabels: [ham, spam]\nlfs: *i\n",
        "expand to more than 100,000 values",
    ),
    Case("lf_yaml_syntax", "labels: [ham, spam\n", "not valid YAML"),
]


@pytest.mark.parametrize("case", LFS, ids=[case.name for case in LFS])
def test_lfs_are_refused(root: Path, tmp_path: Path, case: Case) -> None:
    path = _write(tmp_path, case, "lfs.yaml")
    line = cli_refused(root, "label", "apply", "t", "--lfs", str(path), "--workers", "1",
                       contains=case.contains)  # fmt: skip
    assert "lfs.yaml" in line or "LF" in line, line


@pytest.mark.parametrize("command", ["analyze", "suggest", "check", "model"])
def test_every_label_command_refuses_an_lf_of_a_missing_column(
    root: Path, tmp_path: Path, command: str
) -> None:
    (tmp_path / "lfs.yaml").write_text(lfs(KW, column="body"))
    cli_refused(root, "label", command, "t", "--lfs", str(tmp_path / "lfs.yaml"),
                contains="reads column 'body', which t@v1 does not have")  # fmt: skip


def test_the_lf_api_refuses_a_missing_column(root: Path, tmp_path: Path) -> None:
    (tmp_path / "lfs.yaml").write_text(lfs(KW, column="body"))
    functions = load_lfs(tmp_path / "lfs.yaml")
    with Repository.open(root) as repo:
        api_refused(root, lambda: apply_lfs(repo, "t", functions, workers=1), LabelingError,
                    "reads column 'body'")  # fmt: skip
        api_refused(root, lambda: stale_lfs(repo, "t", functions), LabelingError,
                    "reads column 'body'")  # fmt: skip
