"""`fmforge runs ls / show / compare` on real runs in a real repository."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tests.clirunner import fm

from fmforge.repository import Repository
from fmforge.tracking import start_run
from fmforge.tracking.views import RunsView


def two_runs(repo: Repository) -> list[str]:
    ids = []
    for lr, name in ((1e-4, "slow"), (1e-3, "fast")):
        config = {"optim": {"lr": lr}, "epochs": 2}
        with start_run("sentiment", repo=repo, name=name, config=config, tags=["sweep"]) as run:
            for step in range(300):
                loss = 2.0 * math.exp(-step * lr * 10) if step < 150 or name == "slow" else 5.0
                run.log({"loss": loss, "eval_acc": 1 - loss / 3}, step=step)
        ids.append(run.id)
    return ids


def test_ls_show_and_compare(repo: Repository) -> None:
    _slow, fast = two_runs(repo)
    store = repo.root
    code, out = fm(store, "runs", "ls", "--json")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["name"] for r in records] == ["fast", "slow"]
    assert records[0]["metrics"]["loss"]["count"] == 300

    code, out = fm(store, "runs", "ls", "config.optim.lr > 5e-4 and tags ~ sweep", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [fast]
    code, out = fm(store, "runs", "ls", "metrics.eval_acc.max > 0.5")
    assert "slow" in out

    code, out = fm(store, "runs", "show", "slow")
    assert code == 0, out
    assert "optim.lr = 0.0001" in out
    assert "loss" in out
    assert "▁" in out or "█" in out  # the sparkline

    code, out = fm(store, "runs", "compare", "slow", "fast")
    assert code == 0, out
    assert "optim.lr" in out
    # exp(-0.01 s) and exp(-0.001 s) differ by more than 5% from s = 6 on
    first = next(s for s in range(300) if 1 - math.exp(-0.009 * s) > 0.05)
    assert first == 6
    (loss_row,) = [line for line in out.splitlines() if line.startswith("│ loss")]
    assert "step 6" in loss_row


def test_query_and_lookup_errors_are_one_line(repo: Repository) -> None:
    two_runs(repo)
    code, out = fm(repo.root, "runs", "ls", "lr > 1")
    assert code == 1
    assert out.startswith("fmforge: error: unknown field 'lr'")
    code, out = fm(repo.root, "runs", "show", "nope")
    assert code == 1
    assert "no run with id or name 'nope'" in out


def test_report_is_one_self_contained_file_that_keeps_spikes(
    repo: Repository, tmp_path: Path
) -> None:
    with start_run("p", repo=repo, name="spiky") as run:
        for step in range(20_000):
            run.log({"loss": 100.0 if step == 12_345 else 1.0 + (step % 10) * 0.01}, step=step)
        run.log({"loss": math.nan}, step=20_000)
    code, out = fm(repo.root, "runs", "report", "spiky", "-o", str(tmp_path / "r.html"))
    assert code == 0, out
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page  # nothing runs and nothing is fetched when it is opened
    assert "http" not in page
    assert page.count("<svg") == 1
    assert "100" in page  # the one-step spike is the chart's maximum: it was not averaged away
    assert "non_finite on loss at step 20000" in page.replace("</li>", "").replace("<li>", "")


def test_import_tensorboard_event_files(repo: Repository, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for name, scale in (("run-a", 1.0), ("nested/run-b", 2.0)):
        writer = SummaryWriter(str(tmp_path / "tb" / name))
        for step in range(0, 100, 10):
            writer.add_scalar("train/loss", scale / (step + 1), step)
            writer.add_scalar("lr", 0.1, step)
        writer.close()
    code, out = fm(repo.root, "runs", "import-tb", str(tmp_path / "tb"), "--project", "old")
    assert code == 0, out
    assert "imported 2 runs" in out
    rows = {r["name"]: r for r in repo.view(RunsView).rows(project="old")}
    assert sorted(rows) == ["nested/run-b", "run-a"]
    b = rows["nested/run-b"]["metrics"]["train/loss"]
    assert (b["count"], b["last_step"]) == (10, 90)
    assert b["max"] == pytest.approx(2.0)  # float32 in the event file
    code, out = fm(repo.root, "runs", "import-tb", str(tmp_path / "empty-does-not-exist"))
    assert code == 1
    assert "no TensorBoard event files" in out


def test_the_dashboards_runs_json_is_the_runs_table(repo: Repository) -> None:
    """`table_json` (assembled by SQLite from stored JSON) says exactly what `rows()` says."""
    two_runs(repo)
    with start_run("other", repo=repo, name="nan run") as run:
        run.log({"loss": math.nan, "acc": 0.1 + 0.2}, step=0)  # summaries with None in them
    index = repo.view(RunsView)
    assert json.loads(index.table_json()) == index.rows()
    assert json.loads(index.table_json(project="other")) == index.rows(project="other")
    assert json.loads(index.table_json("metrics.loss.max > 1")) == index.rows(
        "metrics.loss.max > 1"
    )
    assert json.loads(index.table_json(project="none")) == []
    (nan_run,) = index.rows(project="other")
    assert nan_run["metrics"]["loss"]["non_finite"] == 1
    assert nan_run["metrics"]["acc"]["last"] == 0.1 + 0.2  # 17 digits: the same float


def test_ls_shows_a_page_of_the_newest_runs(repo: Repository) -> None:
    from fmforge.tracking.events import RunStarted

    for i in range(25):
        run_id = f"run-{i:03d}"
        repo.record(f"run/{run_id}", RunStarted({
            "run": run_id, "project": "p", "name": f"r{i:03d}", "config": {}, "config_flat": {},
            "datasets": [], "base_model": None, "seed": None, "tags": [], "started": 1000.0 + i,
        }))  # fmt: skip
    code, out = fm(repo.root, "runs", "ls", "--json")
    assert code == 0, out
    names = [json.loads(line)["name"] for line in out.splitlines()]
    assert names == [f"r{i:03d}" for i in range(24, 4, -1)]  # the 20 newest, newest first
    code, out = fm(repo.root, "runs", "ls", "-n", "3")
    assert code == 0, out
    assert "r024" in out
    assert "r021" not in out
    assert "the 3 newest shown; -n N or --all for more" in out
    code, out = fm(repo.root, "runs", "ls", "--all", "--json")
    assert len(out.splitlines()) == 25
    code, out = fm(repo.root, "runs", "ls", "name ~ r01", "-n", "2", "--json")
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["r019", "r018"]
    code, out = fm(repo.root, "runs", "ls", "--all")
    assert "--all for more" not in out
    code, out = fm(repo.root, "runs", "ls", "-n", "0")
    assert code != 0
    assert "-n" in out
