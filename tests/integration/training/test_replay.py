"""Replay: a recorded CPU finetune run again from its recorded inputs, compared bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fmforge.models import open_model
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, finetune, replay
from fmforge.training.replays import ReplayReport, _Compare, compare_weights
from tests.clirunner import fm


def _spec(**changes: object) -> FinetuneSpec:
    values = {"base": "tiny", "data": "spam", "batch_size": 8, "epochs": 2, "threads": 1,
              "checkpoint_steps": 2, **changes}  # fmt: skip
    return FinetuneSpec.parse(values)


def test_a_recorded_run_replays_bit_identical_and_records_nothing(spam_repo: Repository) -> None:
    result = finetune(spam_repo, _spec(dropout=0.1))
    events = spam_repo.ledger.count()
    report = replay(spam_repo, result.run)
    assert report.identical, report.summary()
    assert report.steps == result.steps == report.losses_compared
    assert report.checkpoints_compared == len(result.checkpoints) >= 2
    assert report.result_compared
    assert report.tensors_compared > 0
    assert spam_repo.ledger.count() == events
    code, output = fm(spam_repo.root, "runs", "replay", result.run_name)
    assert code == 0, output
    assert "bit-identical" in output


def test_a_sparse_run_replays_with_its_mask(spam_repo: Repository) -> None:
    result = finetune(spam_repo, _spec(method="sparse", keep="5%", epochs=1))
    assert replay(spam_repo, result.run).identical


def test_the_first_differing_tensor_and_loss_are_named(
    spam_repo: Repository, tmp_path: Path
) -> None:
    result = finetune(spam_repo, _spec(epochs=1))
    weights = open_model(result.commit_ref, repo=spam_repo) / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    assert compare_weights(spam_repo, result.commit_ref, weights) == (len(tensors), None, 0.0)
    names = list(tensors)
    nudged = dict(tensors)
    nudged[names[3]] = tensors[names[3]].clone()
    nudged[names[3]].view(-1)[0] += 0.25
    save_file(nudged, str(tmp_path / "w.safetensors"))
    _, first, diff = compare_weights(spam_repo, result.commit_ref, tmp_path / "w.safetensors")
    assert first == names[3]
    assert math.isclose(diff, 0.25, rel_tol=1e-3)

    report = ReplayReport(result.run)
    sink = _Compare(spam_repo, report, {1: 0.5, 2: 0.25}, {}, last_step=2)
    sink.logged(1, {"loss": 0.5})
    sink.logged(2, {"loss": float(torch.tensor(0.25).nextafter(torch.tensor(1.0)))})
    assert not report.identical
    assert report.first_step == 2
    assert "step 2" in report.summary()
