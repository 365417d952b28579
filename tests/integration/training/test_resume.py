"""A finetune killed with SIGKILL goes on from its last checkpoint commit and data position, to
the very weights an uninterrupted run reaches; replay reproduces it bit for bit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fmforge.models import ModelRefs, load_state_dict
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.tracking.views import RunsView
from fmforge.training import FinetuneSpec, finetune, replay
from tests.training_inputs import spam_repository

ARGS = {
    "base": "tiny", "data": "spam", "method": "full", "epochs": 10, "batch_size": 8,
    "checkpoint_steps": 3, "threads": 1, "project": "resume", "eval_split": "valid",
}  # fmt: skip


def _command_line() -> list[str]:
    out = []
    for key, value in ARGS.items():
        out += ["--" + key.replace("_", "-"), str(value)]
    return out


def _checkpoints(root: Path) -> tuple[str | None, int]:
    with Repository.open(root) as repo:
        rows = repo.view(RunsView).rows(project="resume", strict_metrics=False)
    return (rows[0]["id"], rows[0]["checkpoints"]) if rows else (None, 0)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_weights(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    spam_repository(tmp_path / "a", tiny_models[0]).close()
    child = subprocess.Popen(
        [sys.executable, "-m", "fmforge", "--store", str(tmp_path / "a"), "finetune",
         *_command_line()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    killed_run, seen = None, 0
    while time.monotonic() < deadline and child.poll() is None:
        killed_run, seen = _checkpoints(tmp_path / "a")
        if seen >= 2:
            child.send_signal(signal.SIGKILL)  # kill -9: no cleanup, no RunFinished
            break
        time.sleep(0.1)
    _, errors = child.communicate()
    if child.returncode == 0:
        pytest.skip("the finetune finished before it could be killed")
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]
    spec = FinetuneSpec.parse(ARGS)

    with Repository.open(tmp_path / "a") as repo:
        killed = load_run(repo, killed_run or "")
        assert killed.status == "running"  # silent for less than the heartbeat timeout
        last = killed.checkpoints[-1]
        resumed = finetune(repo, spec)  # the same spec: its crashed run goes on
        assert resumed.resumed_from == {
            "run": killed.id,
            "step": last["step"],
            "model": "tiny",
            "commit": last["commit"],
        }
        first = repo.view(ModelRefs).commit(resumed.checkpoints[0][1])
        assert first.parents == (last["commit"],)  # one line of history on runs/
        assert load_run(repo, resumed.run).config["resumed_from"]["run"] == killed.id
        again = finetune(repo, spec)  # the crashed run was resumed once: now a fresh run
        assert again.resumed_from is None
        report = replay(repo, resumed.run)
        assert report.identical, report.summary()
        assert report.losses_compared == resumed.steps - last["step"]

        with spam_repository(tmp_path / "b", tiny_models[0]) as fresh:
            uninterrupted = finetune(fresh, spec)
            assert uninterrupted.resumed_from is None
            with (
                load_state_dict(resumed.commit_ref, repo=repo) as ours,
                load_state_dict(uninterrupted.commit_ref, repo=fresh) as theirs,
            ):
                assert list(ours) == list(theirs)
                for name in ours:
                    assert torch.equal(ours[name], theirs[name]), name


class Interrupted(Exception):
    pass


def test_a_failed_lora_run_resumes_explicitly_to_the_uninterrupted_adapter(
    spam_repo: Repository,
) -> None:
    spec = FinetuneSpec.parse({
        "base": "tiny", "data": "spam", "epochs": 3, "batch_size": 8, "threads": 1,
        "checkpoint_steps": 2, "eval_steps": 5, "eval_split": "valid", "dropout": 0.1,
    })  # fmt: skip

    def interrupt(progress: object) -> bool:
        raise Interrupted

    with pytest.raises(Interrupted):
        finetune(spam_repo, spec, callback=interrupt)  # fails at step 5, after 2 checkpoints
    (failed,) = spam_repo.view(RunsView).rows("status = failed")
    assert failed["checkpoints"] == 2
    assert finetune(spam_repo, spec).resumed_from is None  # a failure is not resumed unasked
    resumed = finetune(spam_repo, spec, resume=failed["id"])
    assert resumed.resumed_from is not None
    assert resumed.resumed_from["step"] == 4
    uninterrupted = finetune(spam_repo, spec, resume=None)
    with (
        load_state_dict(resumed.commit_ref, repo=spam_repo) as ours,
        load_state_dict(uninterrupted.commit_ref, repo=spam_repo) as theirs,
    ):
        for name in theirs:
            assert torch.equal(ours[name], theirs[name]), name
