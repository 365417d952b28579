"""Finetune, eval and replay requests that cannot run: one line naming the problem, nothing
recorded (no event, no object file), verify still passing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from fmforge.data import add_dataset
from fmforge.errors import InvalidSpec
from fmforge.models import commit_model, open_model
from fmforge.repository import Repository
from fmforge.tracking import start_run
from fmforge.training import FinetuneSpec, finetune
from tests.hostile.harness import api_refused, cli_refused
from tests.training_inputs import spam_repository, tiny_bert


@dataclass(frozen=True)
class Setup:
    root: Path
    finished: str  # a finished finetune run of SPEC
    plain: str  # a run that is no finetune


SPEC = {"base": "tiny", "data": "spam", "epochs": 1, "batch_size": 8, "threads": 1}
BASIC = ("finetune", "--base", "tiny", "--data", "spam", "--threads", "1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("hostile-training")
    with spam_repository(base / "repo", tiny_bert(base / "bert")) as repo:
        commit_model(repo, "other", tiny_bert(base / "other", seed=1), "another tiny BERT")
        spec = FinetuneSpec.parse(SPEC)
        lora = finetune(repo, spec)  # tiny-spam-lora
        finetune(repo, spec.replace(base="other"))  # other-spam-lora
        commit_model(
            repo,
            "mislinked",
            open_model(lora.commit_ref, repo=repo),
            "an adapter of tiny, linked to other",
            base="other",
        )
        rows = [{"split": s, "text": f"comment {i}", "label": ["ham", "spam", "eggs"][i % 3]}
                for i, s in enumerate(["train"] * 6 + ["valid"] * 3)]  # fmt: skip
        source = base / "named.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        add_dataset(repo, "named", source)
        with start_run("plain", repo=repo) as run:
            run.log({"loss": 1.0})
        return Setup(base / "repo", lora.run, run.id)


FINETUNE_CASES = {
    "unknown method": (["--method", "qlora"], "--method"),
    "unknown task": (["--task", "regression"], "--task"),
    "unknown metric": (["--metric", "bleu"], "--metric"),
    "metric of another task": (["--metric", "perplexity"], "does not apply to classification"),
    "lora option with full": (["--method", "full", "--r", "16"], "--r applies to --method lora"),
    "keep with lora": (["--keep", "1%"], "--keep applies to --method sparse"),
    "keep over 100%": (["--method", "sparse", "--keep", "150%"], "--keep"),
    "keep not a share": (["--method", "sparse", "--keep", "half"], "not a share"),
    "decay with sparse": (["--method", "sparse", "--weight-decay", "0.1"], "--weight-decay"),
    "zero epochs": (["--epochs", "0"], "--epochs"),
    "one label": (["--labels", "spam"], "at least two classes"),
    "missing text column": (["--text-column", "body"], "no column 'body'"),
    "missing label column": (["--no-soft-labels", "--label-column", "gold"], "no column 'gold'"),
    "missing split": (["--eval-split", "dev"], "no such split"),
    "unknown lora target": (["--targets", "no_such_module"], "--targets"),
    "output holding other adapters": (["--output", "other-spam-lora"], "adapters of other"),
    "full model into adapters": (
        ["--method", "full", "--output", "tiny-spam-lora"],
        "holds adapters",
    ),
}


@pytest.mark.parametrize("case", FINETUNE_CASES)
def test_bad_finetune_options_are_refused(setup: Setup, case: str) -> None:
    extra, expected = FINETUNE_CASES[case]
    cli_refused(setup.root, *BASIC, *extra, contains=expected)


INPUT_CASES = {
    "unregistered base": (["--base", "nosuch", "--data", "spam"], "no registered model"),
    "adapter as base": (["--base", "tiny-spam-lora", "--data", "spam"], "is an adapter"),
    "missing dataset": (["--base", "tiny", "--data", "nosuch"], "no dataset"),
    "no data option": (["--base", "tiny"], "--data"),
    "labels not in the data": (
        ["--base", "tiny", "--data", "named", "--no-soft-labels", "--labels", "ham,spam"],
        "'eggs', which is not among the classes ham, spam",
    ),
}


@pytest.mark.parametrize("case", INPUT_CASES)
def test_bad_finetune_inputs_are_refused(setup: Setup, case: str) -> None:
    args, expected = INPUT_CASES[case]
    cli_refused(setup.root, "finetune", "--threads", "1", *args, contains=expected)


def test_resuming_a_run_of_another_spec_is_refused(setup: Setup) -> None:
    cli_refused(
        setup.root,
        *BASIC,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--resume",
        setup.finished,
        contains="started with --lr",
    )


def test_resuming_a_finished_run_is_refused(setup: Setup) -> None:
    cli_refused(setup.root, "finetune", "--resume", setup.finished, contains="finished")


def test_replaying_a_run_that_is_no_finetune_is_refused(setup: Setup) -> None:
    cli_refused(setup.root, "runs", "replay", setup.plain, contains="not recorded by finetune")


EVAL_CASES = {
    "a base without a head": (["tiny", "--data", "spam:test"], "no classification"),
    "metric of another task": (
        ["tiny-spam-lora", "--data", "spam:test", "--metric", "perplexity"],
        "does not apply",
    ),
    "adapter linked to another base": (["mislinked", "--data", "spam:test"], "trained on tiny@"),
    "missing split": (["tiny-spam-lora", "--data", "spam:dev"], "no such split"),
    "another task": (
        ["tiny-spam-lora", "--data", "spam", "--task", "causal-lm"],
        "is a classification model",
    ),
    "unknown model": (["nosuch", "--data", "spam"], "no model named"),
    "labels not in the data": (
        ["tiny-spam-lora", "--data", "named:valid"],
        "'eggs', which is not among the classes ham, spam",
    ),
}


@pytest.mark.parametrize("case", EVAL_CASES)
def test_bad_evaluations_are_refused(setup: Setup, case: str) -> None:
    args, expected = EVAL_CASES[case]
    cli_refused(setup.root, "eval", *args, contains=expected)


MASK_CASES = {
    "unknown parameter": ({"no.such.weight": torch.ones(2, dtype=torch.bool)}, "no such parameter"),
    "wrong shape": (
        {"encoder.layer.0.attention.self.query.weight": torch.ones(3, 3, dtype=torch.bool)},
        "expected a bool tensor",
    ),
    "not bool": (
        {"encoder.layer.0.attention.self.query.weight": torch.ones(32, 32)},
        "expected a bool tensor",
    ),
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_bad_masks_are_refused(setup: Setup, case: str) -> None:
    masks, expected = MASK_CASES[case]
    spec = FinetuneSpec.parse({**SPEC, "method": "sparse", "project": "masks"})
    with Repository.open(setup.root) as repo:
        api_refused(
            setup.root, lambda: finetune(repo, spec, masks=masks), InvalidSpec, contains=expected
        )
