"""Mistyped names: each refused in one line naming the name, with the closest known ones.

A model, branch, tag, dataset, dataset REF, run or remote that names nothing gets "did you
mean ...?"; so does a metric in a runs query that no run of the selection has (which would
otherwise silently match nothing, while other unknown fields are errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmforge.data import add_dataset
from fmforge.errors import QueryError
from fmforge.hints import did_you_mean
from fmforge.models import commit_tensors, create_tag
from fmforge.repository import Repository
from fmforge.tracking import start_run
from fmforge.tracking.views import RunsView
from tests.clirunner import fm
from tests.hostile.harness import api_refused, cli_refused


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    (root / "people.csv").write_text("id,name\n1,ada\n2,bob\n")
    with Repository.init(root) as repo:
        add_dataset(repo, "people", root / "people.csv")
        commit_tensors(repo, "minilm", {"w": np.zeros(4, np.float32)}, message="one")
        create_tag(repo, "minilm", "v1.0", "main")
        commit_tensors(repo, "minilm", {"w": np.ones(4, np.float32)}, message="two")
        for name, project in (("fast", "sweep"), ("slow", "sweep"), ("other", "elsewhere")):
            with start_run(project, repo=repo, name=name, system_interval=None) as run:
                metric = "loss" if project == "sweep" else "accuracy"
                for step in range(3):
                    run.log({metric: 1.0 / (step + 1), "eval_acc": 0.5}, step=step)
    (root / "remote").mkdir()
    Repository.init(root / "remote").close()
    code, out = fm(root, "remote", "add", "origin", str(root / "remote"))
    assert code == 0, out
    return root


CASES = {
    "model": (["model", "log", "minilmm@main"], "no model named 'minilmm'", "'minilm'"),
    "branch": (["model", "log", "minilm@mian"], "no branch, tag or commit 'mian'", "'main'"),
    "tag": (["model", "show", "minilm@v1.1"], "'v1.1'", "'v1.0'"),
    "branch at a date": (["model", "log", "minilm@mian@{{2030-01-01}}"], "'mian'", "'main'"),
    "branch to reset": (["model", "reset", "minilm", "mian", "v1.0"], "no branch 'mian'", "'main'"),
    "branch to delete": (["model", "branch", "minilm", "-d", "mian"], "no branch", "'main'"),
    "checkout": (["model", "checkout", "minilm@mian", "-o", "{tmp}/o"], "'mian'", "'main'"),
    "dataset": (["data", "show", "peple"], "no dataset 'peple'", "'people'"),
    "dataset log": (["data", "log", "peopel"], "no dataset 'peopel'", "'people'"),
    "dataset REF": (["data", "show", "people@lates"], "REF must be", "'latest'"),
    "dataset version": (["data", "show", "people@v12"], "no such version", "'v1'"),
    "run": (["runs", "show", "fasst"], "no run with id or name 'fasst'", "'fast'"),
    "run to compare": (["runs", "compare", "fast", "slwo"], "'slwo'", "'slow'"),
    "metric": (["runs", "ls", "metrics.los.min < 1"], "unknown metric 'los'", "'loss'"),
    "metric stat": (["runs", "ls", "metrics.eval_ac.max > 0"], "'eval_ac'", "'eval_acc'"),
    "metric of a project": (
        ["runs", "ls", "metrics.accuracy.last > 0", "--project", "sweep"],
        "no run of project 'sweep' has it",
        None,
    ),
    "metric after or": (
        ["runs", "ls", "status = finished or metrics.lss.last < 1"],
        "'lss'",
        "'loss'",
    ),
    "remote to push to": (["push", "orign", "minilm"], "no remote named 'orign'", "'origin'"),
    "remote to pull from": (["pull", "orgin", "minilm"], "'orgin'", "'origin'"),
    "remote to remove": (["remote", "remove", "orign"], "'orign'", "'origin'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_mistyped_name_gets_the_closest_ones(root: Path, tmp_path: Path, case: str) -> None:
    args, names, suggestion = CASES[case]
    line = cli_refused(root, *(a.format(tmp=tmp_path) for a in args), contains=names)
    if suggestion is None:
        assert "did you mean" not in line, line
    else:
        assert f"did you mean {suggestion}" in line, line


@pytest.mark.parametrize(
    "args",
    [["model", "log", "zzzzzz@main"], ["data", "show", "zzzzzz"], ["runs", "show", "zzzzzz"],
     ["runs", "ls", "metrics.zzzzzz.min < 1"], ["push", "zzzzzz", "minilm"]],
    ids=["model", "dataset", "run", "metric", "remote"],
)  # fmt: skip
def test_nothing_close_means_no_suggestion(root: Path, args: list[str]) -> None:
    line = cli_refused(root, *args, contains="zzzzzz")
    assert "did you mean" not in line, line


def test_the_query_refusal_through_the_api(root: Path) -> None:
    def query() -> object:
        with Repository.open(root) as repo:
            return repo.view(RunsView).rows("metrics.los.min < 1")

    error = api_refused(root, query, QueryError, contains="unknown metric 'los'")
    assert "did you mean 'loss'?" in str(error)


def test_a_metric_some_run_has_still_filters(root: Path) -> None:
    code, out = fm(root, "runs", "ls", "metrics.accuracy.last > 0", "--json")
    assert code == 0, out
    assert len(out.splitlines()) == 1  # the one run that has it


def test_a_metric_query_over_no_runs_is_empty(tmp_path: Path) -> None:
    Repository.init(tmp_path).close()
    code, out = fm(tmp_path, "runs", "ls", "metrics.loss.min < 1", "--json")
    assert code == 0, out
    assert out.strip() == ""


@pytest.mark.parametrize(
    ("word", "known", "hint"),
    [
        ("los", ["loss", "accuracy"], "; did you mean 'loss'?"),
        ("mian", ["main", "v1"], "; did you mean 'main'?"),
        ("lr_", ["lr_a", "lr_b", "momentum"], "; did you mean 'lr_b' or 'lr_a'?"),
        ("x", ["loss"], ""),
        ("loss", ["loss"], ""),
        ("a", [], ""),
    ],
)
def test_did_you_mean(word: str, known: list[str], hint: str) -> None:
    assert did_you_mean(word, known) == hint
