"""Hostile input to `label synth`, `label review`, `label end-model` and the threshold and
default LF kinds: bad intents, examples files, columns, budgets, seeds, proposals and LF
fields are each refused in one line naming the problem, with the repository unchanged; known
ReDoS patterns never pass the backtracking check generated regexes must pass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fmforge.data import add_dataset, resolve
from fmforge.data.events import LabelingFunctionProposed
from fmforge.data.labeling.endmodel import EndModelSpec, end_model
from fmforge.data.labeling.synth import SynthSpec, proposal_id, synthesize
from fmforge.data.userinput import backtracking_risk
from fmforge.data.versions import STREAM_PREFIX
from fmforge.errors import FmforgeError, LabelingError
from fmforge.repository import Repository
from tests.hostile.harness import api_refused, cli_refused

ROWS = [
    {"text": "check out my channel", "label": 1, "score": 0.5, "name": "a", "flag": "yes"},
    {"text": "subscribe please", "label": 1, "score": 1.5, "name": "b", "flag": "yes"},
    {"text": "great song", "label": 0, "score": 2.5, "name": "c", "flag": "yes"},
    {"text": "love her voice", "label": 0, "score": 3.5, "name": "d", "flag": "yes"},
    {"text": "free gift card http://x.y", "label": 1, "score": 4.5, "name": "e", "flag": "yes"},
    {"text": "best video ever", "label": 0, "score": 5.5, "name": "f", "flag": "yes"},
]
GOOD = "".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in ROWS)
INTENT = "comments that advertise a channel"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository with dataset `t` and one proposed LF, `kw_spam_check` (recorded as
    `synth` would, without embedding anything)."""
    path = tmp_path / "repo"
    path.mkdir()
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with Repository.init(path) as repo:
        add_dataset(repo, "t", tmp_path / "t.jsonl")
        version = resolve(repo, "t")
        entry = {"name": "kw_spam_check", "keywords": ["check"], "label": "spam"}
        repo.record(
            STREAM_PREFIX + "t",
            LabelingFunctionProposed({
                "proposal": proposal_id("t", INTENT, "0" * 64, "0123456789abcdef"),
                "version": version.id, "intent": INTENT, "examples": "0" * 64, "seed": 0,
                "generator": "keywords", "generator_version": "fmforge-synth/1",
                "labels": ["ham", "spam"], "column": "text", "kind": "keyword", "lf": entry,
                "lf_version": "0123456789abcdef", "scores": {"oof_right": 3.0},
            }),
        )  # fmt: skip
    return path


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    contains: str
    files: dict[str, str | bytes] = field(default_factory=dict)  # written beside the repo


def synth(*extra: str, examples: str | None = "ex.jsonl") -> tuple[str, ...]:
    given = ("--examples", "{dir}/" + examples) if examples else ()
    return ("label", "synth", "t", "--intent", INTENT, *given, *extra)


def ex(*lines: object) -> dict[str, str | bytes]:
    return {"ex.jsonl": "".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                                for x in lines)}  # fmt: skip


SYNTH = [
    Case("intent_empty", ("label", "synth", "t", "--intent", "", "--examples", "{dir}/ex.jsonl"),
         "option 'intent' must be a text of 1 to 2,000 chars", {"ex.jsonl": GOOD}),
    Case("intent_blank", ("label", "synth", "t", "--intent", "  \n ", "--examples",
                          "{dir}/ex.jsonl"), "the intent is blank", {"ex.jsonl": GOOD}),
    Case("intent_too_long", ("label", "synth", "t", "--intent", "x" * 2001, "--examples",
                             "{dir}/ex.jsonl"), "option 'intent'", {"ex.jsonl": GOOD}),
    Case("examples_missing", synth(examples="nope.jsonl"), "nope.jsonl: No such file"),
    Case("examples_a_directory", synth(examples="sub"), "is a directory", {"sub/x": "x"}),
    Case("examples_bad_json", synth(), "ex.jsonl: line 2: not valid JSON",
         ex({"text": "a", "label": 0}, "{nope")),
    Case("examples_not_an_object", synth(), "line 1: expected an object", ex([1, 2])),
    Case("examples_no_label", synth(), "line 1: no 'label'", ex({"text": "a"})),
    Case("examples_label_a_list", synth(), "'label' must be a class name or index, not a list",
         ex({"text": "a", "label": [1]})),
    Case("examples_label_unknown", synth("--labels", "ham,spam"),
         "line 2: label 'eggs' is not one of ham, spam",
         ex({"text": "a", "label": "ham"}, {"text": "b", "label": "eggs"})),
    Case("examples_index_out_of_range", synth("--labels", "ham,spam"),
         "label 5 is not a class index (0..1", ex({"text": "a", "label": 5})),
    Case("examples_one_class", synth(), "every example is '1'; give examples of two or more",
         ex({"text": "a", "label": 1}, {"text": "b", "label": 1})),
    Case("examples_text_not_a_string", synth(), "line 1: 'text' must be a string, not 5",
         ex({"text": 5, "label": 0})),
    Case("examples_no_text", synth(), "line 1: no 'text' (the example's text) and no 'row_id'",
         ex({"label": 0})),
    Case("examples_row_id_unknown", synth(), "row id '0123456789abcdef' is not a row of t@v1",
         ex({"row_id": "0123456789abcdef", "label": 0})),
    Case("examples_row_id_short", synth(), "'row_id' must be a row id (8 or more hex digits)",
         ex({"row_id": "abc", "label": 0})),
    Case("examples_conflicting_labels", synth(), "line 2: the same text as",
         ex({"text": "a", "label": 0}, {"text": "a", "label": 1})),
    Case("examples_names_and_indices", synth(), "labels mix class names and indices",
         ex({"text": "a", "label": "ham"}, {"text": "b", "label": 1})),
    Case("examples_empty", synth(), "ex.jsonl: no labelled examples", {"ex.jsonl": ""}),
    Case("examples_not_utf8", synth(), "not UTF-8 text", {"ex.jsonl": b"\xff\xfe\x00x\n"}),
    Case("examples_csv_extra_field", synth(examples="ex.csv"), "line 2: more fields than",
         {"ex.csv": "text,label\na,0,9\n"}),
    Case("examples_and_gold", synth("--gold-column", "label"), "not both", {"ex.jsonl": GOOD}),
    Case("no_examples", synth(examples=None), "give the labelled examples"),
    Case("column_unknown", synth("--column", "body"), "t@v1 has no column 'body'",
         {"ex.jsonl": GOOD}),
    Case("column_not_text", synth("--column", "score"), "column 'score' is double, not text",
         {"ex.jsonl": GOOD}),
    Case("gold_column_unknown", synth("--gold-column", "gold", examples=None),
         "t@v1 has no column 'gold'"),
    Case("gold_column_one_class", synth("--gold-column", "flag", examples=None),
         "every example is"),
    Case("feature_column_unknown", synth("--feature-column", "nope"), "no column 'nope'",
         {"ex.jsonl": GOOD}),
    Case("feature_column_not_numeric", synth("--feature-column", "name"),
         "column 'name' is string, not numeric", {"ex.jsonl": GOOD}),
    Case("budget_zero", synth("--budget", "0"), "--budget must be more than 0 s",
         {"ex.jsonl": GOOD}),
    Case("budget_negative", synth("--budget", "-5s"), "--budget must be a duration",
         {"ex.jsonl": GOOD}),
    Case("budget_text", synth("--budget", "soon"), "--budget must be a duration",
         {"ex.jsonl": GOOD}),
    Case("seed_negative", synth("--seed", "-1"), "option 'seed' must be an integer from 0",
         {"ex.jsonl": GOOD}),
    Case("labels_one", synth("--labels", "ham"), "option 'labels' must be two or more",
         {"ex.jsonl": GOOD}),
    Case("dataset_unknown", ("label", "synth", "nope", "--intent", INTENT, "--gold-column",
                             "label"), "no dataset 'nope'"),
    Case("version_unknown", ("label", "synth", "t@v9", "--intent", INTENT, "--gold-column",
                             "label"), "no such version"),
]  # fmt: skip

REVIEW = [
    Case("review_unknown_lf", ("label", "review", "t", "--accept", "kw_nope"),
         "no proposed LF 'kw_nope' for dataset 't'"),
    Case("review_accept_and_reject", ("label", "review", "t", "--accept", "kw_spam_check",
                                      "--reject", "kw_spam_check"), "both accepted and rejected"),
    Case("review_unknown_dataset", ("label", "review", "nope"), "no dataset 'nope'"),
    Case("review_note_too_long", ("label", "review", "t", "--accept", "kw_spam_check",
                                  "--note", "x" * 5000), "note is longer than 4,096"),
    Case("lfs_accepted_none", ("label", "apply", "t", "--lfs", "accepted"),
         "dataset 't' has no accepted LFs"),
    Case("end_model_without_weak_labels", ("label", "end-model", "t", "--examples",
                                           "{dir}/ex.jsonl"),
         "t@v1 has no column 'weak_label' (run `fmforge label model` first)", {"ex.jsonl": GOOD}),
    Case("end_model_no_examples", ("label", "end-model", "t", "--weak-column", "name"),
         "give the labelled examples"),
]  # fmt: skip


def lfs(*entries: str) -> dict[str, str | bytes]:
    body = "".join("  - " + e.replace("\n", "\n    ") + "\n" for e in entries)
    return {"lfs.yaml": "labels: [ham, spam]\nlfs:\n" + body}


KW = "name: kw\nkeywords: [check]\nlabel: spam"
APPLY = ("label", "apply", "t", "--lfs", "{dir}/lfs.yaml", "--workers", "1")
KINDS = [
    Case("threshold_feature_unknown", APPLY, "LF 1 (th): field 'feature' must be one of chars",
         lfs("name: th\nfeature: colour\nmin: 1\nlabel: spam")),
    Case("threshold_min_above_max", APPLY, "LF 1 (th): min 5 is above max 1",
         lfs("name: th\ncolumn: score\nmin: 5\nmax: 1\nlabel: spam")),
    Case("threshold_min_text", APPLY, "field 'min' must be a number, not 'abc'",
         lfs("name: th\ncolumn: score\nmin: abc\nlabel: spam")),
    Case("threshold_no_label", APPLY, "needs the label it votes",
         lfs("name: th\ncolumn: score\nmin: 1")),
    Case("threshold_column_missing", APPLY, "reads column 'nope', which t@v1 does not have",
         lfs("name: th\ncolumn: nope\nmin: 1\nlabel: spam")),
    Case("feature_on_keywords", APPLY, "feature applies to threshold LFs only",
         lfs(KW + "\nfeature: chars")),
    Case("default_false", APPLY, "field 'default' must be true",
         lfs(KW, "name: d\ndefault: false\nlabel: ham")),
    Case("default_not_a_bool", APPLY, "field 'default' must be true, not 'yes please'",
         lfs(KW, "name: d\ndefault: yes please\nlabel: ham")),
    Case("two_defaults", APPLY, "at most one default LF, not d1, d2",
         lfs(KW, "name: d1\ndefault: true\nlabel: ham", "name: d2\ndefault: true\nlabel: ham")),
    Case("default_alone", APPLY, "a default LF needs other LFs to fall back from",
         lfs("name: d\ndefault: true\nlabel: ham")),
    Case("default_and_keywords", APPLY, "give exactly one of keywords, regex, exemplars",
         lfs("name: d\ndefault: true\nkeywords: [a]\nlabel: ham")),
]  # fmt: skip


def _run(root: Path, case: Case) -> str:
    folder = root.parent
    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    args = [a.replace("{dir}", str(folder)) for a in case.args]
    return cli_refused(root, *args, contains=case.contains)


@pytest.mark.parametrize("case", SYNTH, ids=[c.name for c in SYNTH])
def test_synth_refuses(root: Path, case: Case) -> None:
    _run(root, case)


@pytest.mark.parametrize("case", REVIEW, ids=[c.name for c in REVIEW])
def test_review_and_end_model_refuse(root: Path, case: Case) -> None:
    _run(root, case)


@pytest.mark.parametrize("case", KINDS, ids=[c.name for c in KINDS])
def test_new_lf_kinds_refuse(root: Path, case: Case) -> None:
    _run(root, case)


API = {
    "budget_zero": ({"budget_s": 0.0}, "option 'budget_s' must be seconds, more than 0"),
    "budget_infinite": ({"budget_s": float("inf")}, "option 'budget_s'"),
    "budget_text": ({"budget_s": "60s"}, "option 'budget_s'"),
    "unknown_option": ({"budgett": 1.0}, "unknown option 'budgett'"),
    "examples_a_number": ({"examples": 5}, "option 'examples'"),
    "seed_a_bool": ({"seed": True}, "option 'seed'"),
}


@pytest.mark.parametrize("fields", API.values(), ids=list(API))
def test_the_python_spec_refuses(root: Path, fields: tuple[dict[str, object], str]) -> None:
    given, contains = fields
    spec: dict[str, object] = {"target": "t", "intent": INTENT, "gold_column": "label", **given}
    api_refused(root, lambda: SynthSpec.parse(**spec), LabelingError, contains)


def test_the_python_calls_refuse_before_changing_anything(root: Path, tmp_path: Path) -> None:
    (tmp_path / "ex.jsonl").write_text(GOOD)
    with Repository.open(root) as repo:
        bad = SynthSpec.parse(target="t", intent=INTENT, examples=tmp_path / "ex.jsonl",
                              column="nope")  # fmt: skip
        api_refused(root, lambda: synthesize(repo, bad), LabelingError, "no column 'nope'")
        spec = EndModelSpec.parse(target="t", gold_column="label")
        api_refused(root, lambda: end_model(repo, spec), LabelingError, "no column 'weak_label'")
        api_refused(root, lambda: EndModelSpec.parse(target="t", seed=-3), FmforgeError,
                    "option 'seed'")  # fmt: skip


REDOS = [r"(a+)+$", r"(a|aa)+$", r"(\w+\s?)*$", r"(.*a){12}", r"^(a|a?)+$", r"(x+x+)+y",
         r"(?:a*)*b", r"((ab)*)+c", r"(a|b|ab)*c", r"^(\d+)*$"]  # fmt: skip


@pytest.mark.parametrize("pattern", REDOS)
def test_known_redos_patterns_fail_the_backtracking_check(pattern: str) -> None:
    reason = backtracking_risk(pattern)
    assert reason is not None
    assert "inside a quantified group" in reason


@pytest.mark.parametrize("pattern", [r"\bsubscrib\w*", r"https?://|www\.", r"(ab)+c", r"\d{3}"])
def test_plain_patterns_pass_it(pattern: str) -> None:
    assert backtracking_risk(pattern) is None
