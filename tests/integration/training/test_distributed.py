"""``--nproc 2``: the same finetune under torchrun (DDP, gloo on CPU), rank 0 alone recording."""

from __future__ import annotations

import pytest

from fmforge.models import ModelRefs, load_state_dict
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.tracking.views import RunsView
from fmforge.training import FinetuneSpec, finetune


@pytest.mark.slow
def test_two_processes_train_one_run_that_rank_0_records(spam_repo: Repository) -> None:
    spec = FinetuneSpec.parse({
        "base": "tiny", "data": "spam", "method": "full", "batch_size": 8, "epochs": 2,
        "threads": 1, "eval_split": "valid", "project": "ddp",
    })  # fmt: skip
    result = finetune(spam_repo, spec, nproc=2)
    runs = spam_repo.view(RunsView).rows(project="ddp")
    assert [r["id"] for r in runs] == [result.run]  # one run, not one per rank
    record = load_run(spam_repo, result.run)
    assert record.status == "finished"
    assert record.config["process"]["nproc"] == 2
    assert len(record.checkpoints) == 1 == len(result.checkpoints)  # committed once
    assert record.summary["loss"]["count"] == result.steps == 6
    index = spam_repo.view(ModelRefs)
    assert index.commit(result.commit or "").parents == (index.resolve("tiny", "main"),)
    assert result.evaluations[0].split == "valid"
    with (
        load_state_dict("tiny", repo=spam_repo) as base,
        load_state_dict(result.commit_ref, repo=spam_repo) as trained,
    ):
        name = "encoder.layer.0.attention.self.query.weight"
        assert not (base[name] == trained["bert." + name]).all()  # the ranks trained it
