"""``fmforge model select``: candidates ranked by LogME and a linear probe, recorded as
``ModelSelected``."""

from __future__ import annotations

import json

import torch

from fmforge.models import ModelRefs, commit_tensors
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, finetune, select_model
from fmforge.training.transferability import kendall_tau
from tests.clirunner import fm


def test_every_compatible_model_is_ranked_and_the_selection_recorded(
    spam_repo: Repository,
) -> None:
    repo = spam_repo
    lora = finetune(repo, FinetuneSpec.parse({"base": "tiny", "data": "spam", "epochs": 1,
                                              "batch_size": 8, "threads": 1}))  # fmt: skip
    commit_tensors(repo, "plain", {"w": torch.ones(2, 2)}, message="weights without a config")
    result = select_model(repo, "spam", split="train", examples=20, folds=3, threads=1)
    index = repo.view(ModelRefs)
    expected = {f"{m}@{index.resolve(m, 'main')}" for m in ("tiny", "tiny-lm")}
    expected.add(lora.commit_ref)
    assert {c.model for c in result.candidates} == expected
    assert [t.partition("@")[0] for t, _ in result.skipped] == ["plain"]
    assert result.examples == 20
    assert result.kendall_tau == kendall_tau(
        [c.logme for c in result.candidates], [c.probe for c in result.candidates]
    )
    assert result.pick == result.logme_ranking[0]
    for candidate in result.candidates:
        assert candidate.features == 32
        assert 0 <= candidate.probe <= 1
    (event,) = list(repo.ledger.read_stream(f"selection/{result.selection}"))
    assert event.type == "ModelSelected"
    assert event.data["pick"] == result.pick
    assert event.data["kendall_tau"] == result.kendall_tau
    assert {c["model"]: c["logme"] for c in event.data["candidates"]} == {
        c.model: c.logme for c in result.candidates
    }
    assert event.data["logme_ranking"] == result.logme_ranking
    assert event.data["probe_ranking"] == result.probe_ranking
    assert event.data["skipped"][0].startswith("plain@")
    again = select_model(repo, "spam", split="train", examples=20, folds=3, threads=1,
                         record=False)  # fmt: skip
    assert [(c.model, c.logme, c.probe) for c in again.candidates] == [
        (c.model, c.logme, c.probe) for c in result.candidates
    ]
    assert repo.verify().view_differences == ()


def test_model_select_on_the_command_line(spam_repo: Repository) -> None:
    code, output = fm(
        spam_repo.root, "model", "select", "--data", "spam:train", "--candidates", "tiny",
        "--candidates", "tiny-lm", "--examples", "16", "--folds", "2", "--threads", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, output
    found = json.loads(output)
    assert len(found["candidates"]) == 2
    assert found["pick"] in found["logme_ranking"][:1]
    code, output = fm(
        spam_repo.root, "model", "select", "--data", "spam:train", "--candidates",
        "tiny,tiny-lm", "--examples", "16", "--folds", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "LogME vs probe Kendall tau" in output
    assert "pick: " in output
