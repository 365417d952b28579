"""Fisher, ``finetune --auto`` and ``model select`` requests that cannot run: one line naming the
problem, nothing recorded (no event, no object file), verify still passing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from fmforge.data import add_dataset
from fmforge.errors import FisherNotFound, InvalidSpec
from fmforge.models import commit_tensors
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, SearchSpec, finetune, load_fisher
from tests.hostile.harness import api_refused, cli_refused
from tests.training_inputs import spam_repository, tiny_bert


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile-training-aux")
    with spam_repository(base / "repo", tiny_bert(base / "bert")) as repo:
        finetune(repo, FinetuneSpec.parse({"base": "tiny", "data": "spam", "epochs": 1,
                                           "batch_size": 8, "threads": 1}))  # fmt: skip
        commit_tensors(repo, "plain", {"w": torch.ones(2, 2)}, message="no config, no tokenizer")
        for name, labels in (("named", ["ham", "spam", "eggs"]), ("oneclass", ["ham"])):
            rows = [{"split": "train", "text": f"comment {i}", "label": labels[i % len(labels)]}
                    for i in range(9)]  # fmt: skip
            source = base / f"{name}.jsonl"
            source.write_text("".join(json.dumps(r) + "\n" for r in rows))
            add_dataset(repo, name, source)
    return base / "repo"


FISHER_CASES = {
    "unknown model": (["nosuch", "--data", "spam"], "no registered model 'nosuch'"),
    "base without --task": (["tiny", "--data", "spam"], "has no task head: say --task"),
    "unknown kind": (
        ["tiny", "--data", "spam", "--task", "classification", "--kind", "exact"],
        "--kind exact",
    ),
    "unknown task": (["tiny", "--data", "spam", "--task", "regression"], "--task regression"),
    "no examples": (
        ["tiny", "--data", "spam", "--task", "classification", "--examples", "0"],
        "--examples 0",
    ),
    "missing split": (
        ["tiny", "--data", "spam:dev", "--task", "classification"],
        "no such split",
    ),
    "missing text column": (
        ["tiny", "--data", "spam", "--task", "classification", "--text-column", "body"],
        "no column 'body'",
    ),
    "missing dataset": (["tiny", "--data", "nosuch", "--task", "classification"], "no dataset"),
    "another task": (
        ["tiny-spam-lora", "--data", "spam", "--task", "causal-lm"],
        "is a classification model",
    ),
    "labels not in the model's classes": (
        ["tiny-spam-lora", "--data", "named"],
        "'eggs', which is not among the classes ham, spam",
    ),
    "not a transformers model": (
        ["plain", "--data", "spam", "--task", "classification"],
        "not a transformers model",
    ),
}


@pytest.mark.parametrize("case", FISHER_CASES)
def test_bad_fisher_requests_are_refused(root: Path, case: str) -> None:
    args, expected = FISHER_CASES[case]
    cli_refused(root, "fisher", *args, contains=expected)


def test_reading_a_fisher_that_was_never_computed_is_refused(root: Path) -> None:
    with Repository.open(root) as repo:
        api_refused(root, lambda: load_fisher(repo, "tiny"), FisherNotFound, "fmforge fisher")


AUTO = ("finetune", "--base", "tiny", "--data", "spam", "--threads", "1")
AUTO_CASES = {
    "no eval split": (["--auto"], "--auto needs --eval-split"),
    "no trials": (["--auto", "--eval-split", "valid", "--trials", "0"], "--trials"),
    "a wall that is no duration": (
        ["--auto", "--eval-split", "valid", "--wall", "soon"],
        "not a duration",
    ),
    "a negative trial wall": (
        ["--auto", "--eval-split", "valid", "--trial-wall", "-5m"],
        "--trial-wall",
    ),
    "eta of one": (["--auto", "--eval-split", "valid", "--eta", "1"], "--eta"),
    "unknown sampler": (["--auto", "--eval-split", "valid", "--sampler", "grid"], "--sampler"),
    "unknown parameter": (
        ["--auto", "--eval-split", "valid", "--space", "momentum=0.1:0.9"],
        "momentum cannot be searched",
    ),
    "inverted range": (
        ["--auto", "--eval-split", "valid", "--space", "lr=1e-3:1e-5"],
        "LOW must be below HIGH",
    ),
    "log range from zero": (
        ["--auto", "--eval-split", "valid", "--space", "lr=0:1e-3"],
        "LOW must be positive",
    ),
    "not an integer": (
        ["--auto", "--eval-split", "valid", "--space", "epochs=one:3"],
        "is not an integer",
    ),
    "no range or choices": (
        ["--auto", "--eval-split", "valid", "--space", "lr=0.001"],
        "NAME=LOW:HIGH or NAME=A|B|C",
    ),
    "option of another method": (
        ["--auto", "--eval-split", "valid", "--space", "keep=0.001:0.01"],
        "--keep applies to --method sparse",
    ),
    "value the spec refuses": (
        ["--auto", "--eval-split", "valid", "--space", "epochs=0|2"],
        "--space epochs: 0 does not fit",
    ),
    "a parameter twice": (
        ["--auto", "--eval-split", "valid", "--space", "lr=1e-4:1e-3", "--space", "lr=1e-5:1e-4"],
        "given twice",
    ),
    "search option without --auto": (["--trials", "3"], "--trials applies to --auto only"),
    "auto with several processes": (
        ["--auto", "--eval-split", "valid", "--nproc", "2"],
        "no --resume or --nproc",
    ),
    "auto with a bad finetune option": (["--auto", "--eval-split", "dev"], "no such split"),
}


@pytest.mark.parametrize("case", AUTO_CASES)
def test_bad_searches_are_refused(root: Path, case: str) -> None:
    args, expected = AUTO_CASES[case]
    cli_refused(root, *AUTO, *args, contains=expected)


def test_a_bad_search_spec_is_refused_in_python(root: Path) -> None:
    with Repository.open(root):
        api_refused(root, lambda: SearchSpec.parse({"wall": 0}), InvalidSpec, "--wall")
        api_refused(root, lambda: SearchSpec.parse({"tirals": 3}), InvalidSpec, "--tirals")


SELECT_CASES = {
    "unknown dataset": (["--data", "nosuch"], "no dataset"),
    "unknown candidate": (
        ["--data", "spam", "--candidates", "nosuch", "--candidates", "tiny"],
        "--candidates nosuch",
    ),
    "one candidate": (["--data", "spam", "--candidates", "tiny"], "at least two"),
    "one fold": (["--data", "spam", "--folds", "1"], "--folds 1"),
    "one example": (["--data", "spam", "--examples", "1"], "--examples 1"),
    "a candidate that cannot embed text": (
        ["--data", "spam", "--candidates", "plain,tiny"],
        "--candidates plain@",
    ),
    "missing split": (["--data", "spam:dev"], "no such split"),
    "one class": (
        ["--data", "oneclass", "--candidates", "tiny,tiny-spam-lora"],
        "classification needs two or more",
    ),
    "missing text column": (["--data", "spam", "--text-column", "body"], "no column 'body'"),
}


@pytest.mark.parametrize("case", SELECT_CASES)
def test_bad_selections_are_refused(root: Path, case: str) -> None:
    args, expected = SELECT_CASES[case]
    cli_refused(root, "model", "select", "--threads", "1", *args, contains=expected)
