"""``finetune --auto``: trials as runs, ASHA pruning, the best commit tagged, budgets enforced
(a trial interrupted at the wall-time budget is recorded as such), all recorded on search/."""

from __future__ import annotations

import json
import time
from typing import Any

from fmforge.models import ModelRefs
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.tracking.views import RunsView
from fmforge.training import FinetuneSpec, SearchSpec
from fmforge.training.search import search
from tests.clirunner import fm


def spec(**changes: object) -> FinetuneSpec:
    values = {"base": "tiny", "data": "spam", "eval_split": "valid", "batch_size": 4,
              "epochs": 3, "threads": 1, **changes}  # fmt: skip
    return FinetuneSpec.parse(values)


def events(repo: Repository, search_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, dict(e.data)) for e in repo.ledger.read_stream(f"search/{search_id}")]


def test_a_search_runs_its_trials_as_runs_prunes_and_tags_the_best(spam_repo: Repository) -> None:
    repo = spam_repo
    budget = SearchSpec.parse({"trials": 5, "wall": "10m", "startup_trials": 2,
                               "space": ["lr=1e-4:3e-3", "r=4|8"]})  # fmt: skip
    result = search(repo, spec(), budget)
    assert len(result.trials) == 5  # the trial budget, no more
    assert result.stopped_by == "trials"
    states = [t.state for t in result.trials]
    assert "pruned" in states  # the tiny model's objective ties: ASHA stops the late-comers
    assert all(s in ("complete", "pruned") for s in states)
    runs = repo.view(RunsView)
    tags = {row["id"]: row["tags"] for row in runs.rows(project="finetune", strict_metrics=False)}
    for trial in result.trials:
        assert trial.run is not None
        record = runs.run(trial.run)
        assert record.name == f"auto-{result.search[:8]}-{trial.number}"
        assert {"auto", f"search/{result.search}"} <= set(tags[trial.run])
        assert set(trial.params) == {"lr", "r"}
        config = load_run(repo, trial.run).config["finetune"]
        assert config["lr"] == trial.params["lr"]
        assert config["eval_steps"] == 2  # the first rung: 18 steps / 3^2
        if trial.state == "pruned":
            assert trial.commit is None
            assert trial.steps < 18
    best = result.best
    assert best is not None
    assert best.state == "complete"
    assert best.commit is not None
    model, _, commit = best.commit.partition("@")
    assert repo.view(ModelRefs).tags(model)[f"auto/{result.search}/best"] == commit
    assert result.steps == sum(t.steps for t in result.trials) < 5 * 18
    recorded = events(repo, result.search)
    assert [t for t, _ in recorded] == ["SearchStarted"] + ["TrialFinished"] * 5 + [
        "SearchFinished"
    ]
    started, finished = recorded[0][1], recorded[-1][1]
    assert started["pruner"] == {"kind": "asha", "eta": 3, "min_steps": 2}
    assert started["space"]["r"] == {"choices": [4, 8]}
    assert finished["tag"] == f"auto/{result.search}/best"
    assert isinstance(finished["best"], dict)
    assert finished["best"]["trial"] == best.number
    assert repo.verify().view_differences == ()


def test_the_wall_budget_interrupts_the_running_trial_and_records_it(
    spam_repo: Repository,
) -> None:
    repo = spam_repo
    long = spec(epochs=400, checkpoint_steps=100_000)  # ~2,400 steps: longer than the budget
    started = time.monotonic()
    result = search(repo, long, SearchSpec.parse({"trials": 4, "wall": "2s"}))
    elapsed = time.monotonic() - started
    assert result.stopped_by == "wall"
    (trial,) = result.trials  # no trial starts after the budget
    assert trial.state == "interrupted"
    assert trial.commit is None
    assert 0 < trial.steps < 2400
    assert trial.reason == f"wall-time budget at step {trial.steps}"
    assert elapsed < 2 + 10  # the trial stops at the step after the deadline
    assert trial.run is not None
    record = load_run(repo, trial.run)
    assert record.tag_values["fmforge.stopped"] == f"by its wall-time budget at step {trial.steps}"
    assert "fmforge.result" not in record.tag_values
    types = [t for t, _ in events(repo, result.search)]
    assert types == ["SearchStarted", "TrialFinished", "SearchFinished"]
    finished = events(repo, result.search)[1][1]
    assert finished["state"] == "interrupted"
    assert result.tag is None


def test_a_trial_wall_budget_interrupts_each_trial_and_the_search_goes_on(
    spam_repo: Repository,
) -> None:
    repo = spam_repo
    budget = SearchSpec.parse({"trials": 2, "wall": "10m", "trial_wall": "0.001s"})
    result = search(repo, spec(), budget)
    assert [t.state for t in result.trials] == ["interrupted", "interrupted"]
    assert all(t.steps == 1 for t in result.trials)  # stopped at the first step past it
    assert result.stopped_by == "trials"
    assert result.best is None


def test_finetune_auto_on_the_command_line(spam_repo: Repository) -> None:
    root = spam_repo.root
    code, output = fm(
        root, "finetune", "--auto", "--base", "tiny", "--data", "spam",
        "--eval-split", "valid", "--epochs", "1", "--batch-size", "8", "--threads", "1",
        "--trials", "2", "--wall", "5m", "--space", "lr=1e-4:1e-3", "--json",
    )  # fmt: skip
    assert code == 0, output
    found = json.loads(output)
    assert len(found["trials"]) == 2
    assert found["tag"] == f"auto/{found['search']}/best"
    code, output = fm(
        root, "finetune", "--auto", "--base", "tiny", "--data", "spam",
        "--eval-split", "valid", "--epochs", "1", "--threads", "1", "--trials", "1",
    )  # fmt: skip
    assert code == 0, output
    assert "trial 0: complete" in output
    assert "tagged auto/" in output
