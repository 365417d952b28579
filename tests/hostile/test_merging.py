"""Merges and rebases that cannot be done: each refused in one line naming the problem, with
nothing recorded and no object stored (every check runs before the first tensor is)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fmforge.errors import FmforgeError, InvalidMerge, RefNotFound
from fmforge.merging import MergeSpec, merge, parse_spec
from fmforge.merging.rebase import rebase
from fmforge.models import commit_tensors
from fmforge.repository import Repository
from tests.hostile.harness import api_refused, cli_refused


def _weights(seed: int, vocab: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "emb.weight": rng.standard_normal((vocab, 8)).astype(np.float32),
        "layer.q.weight": rng.standard_normal((8, 8)).astype(np.float32),
        "layer.norm.bias": rng.standard_normal(8).astype(np.float32),
        "ids": np.arange(6, dtype=np.int64),
    }


def _adapter(repo: Repository, name: str, base: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = {
        "base_model.model.layer.q.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
        "base_model.model.layer.q.lora_B.weight": rng.standard_normal((8, 2)).astype(np.float32),
    }
    config = json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]})
    commit_tensors(repo, name, tensors, message=name, base=base,
                   path="adapter_model.safetensors",
                   files={"adapter_config.json": config.encode()})  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("merging")
    with Repository.init(root) as repo:
        base = _weights(0)
        commit_tensors(repo, "m", base, message="base")
        for branch, seed in (("a", 1), ("b", 2)):
            tuned = dict(base)
            tuned["layer.q.weight"] = _weights(seed)["layer.q.weight"]
            tuned["layer.norm.bias"] = base["layer.norm.bias"] + seed
            commit_tensors(repo, "m", tuned, message=branch, branch=branch)
        commit_tensors(repo, "m", dict(base, ids=np.arange(6)[::-1].copy()),
                       message="ids", branch="ids")  # fmt: skip
        commit_tensors(repo, "other", _weights(3), message="another base")
        commit_tensors(repo, "bigvocab", _weights(0, vocab=51), message="one more token")
        fewer = dict(base)
        del fewer["layer.norm.bias"]
        commit_tensors(repo, "fewer", fewer, message="no norm")
        _adapter(repo, "ada1", "m@main", 4)
        _adapter(repo, "ada2", "other@main", 5)
        _adapter(repo, "ada3", "m@main", 6)
        commit_tensors(repo, "nobase", {"base_model.model.layer.q.lora_A.weight":
                       np.zeros((2, 8), np.float32)}, message="no base",
                       files={"adapter_config.json": b'{"peft_type": "LORA", "r": 2}'})  # fmt: skip
    return root


MERGE = ["model", "merge"]
CASES: dict[str, tuple[list[str], str]] = {
    "unknown method": (
        [*MERGE, "--method", "tie", "--base", "m@main", "m@a", "m@b"],
        "unknown merge method 'tie'; did you mean 'ties'?",
    ),
    "fewer weights than inputs": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--weights", "1"],
        "1 weight(s) for 2 input(s)",
    ),
    "more weights than inputs": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--weights", "1,2,3"],
        "3 weight(s) for 2 input(s)",
    ),
    "weights that are not numbers": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--weights", "1,x"],
        "--weights '1,x': expected numbers",
    ),
    "a weight that is not finite": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--weights", "1,nan"],
        "inputs.1.weight",
    ),
    "density above 1": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "--density", "1.5"],
        "density: Input should be less than or equal to 1",
    ),
    "density of 0": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "--density", "0"],
        "density: Input should be greater than 0",
    ),
    "a parameter the method does not take": (
        [*MERGE, "--method", "task_arithmetic", "--base", "m@main", "m@a", "--density", "0.5"],
        "method task_arithmetic takes no density",
    ),
    "a seed for a method without randomness": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "--seed", "3"],
        "method ties takes no seed",
    ),
    "task vectors without a base": (
        [*MERGE, "--method", "ties", "m@a", "m@b"],
        "method ties combines task vectors: give the base model",
    ),
    "slerp of three models": (
        [*MERGE, "--method", "slerp", "--base", "m@main", "m@a", "m@b"],
        "slerp interpolates between two models",
    ),
    "slerp with weights": (
        [*MERGE, "--method", "slerp", "m@a", "m@b", "--weights", "1,2"],
        "slerp takes no weights",
    ),
    "an unknown compute dtype": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--compute-dtype", "float16"],
        "compute_dtype",
    ),
    "a rank without an adapter output": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--rank", "4"],
        "rank is the rank of an adapter output",
    ),
    "adapters on different bases": (
        [*MERGE, "--method", "task_arithmetic", "ada1@main", "ada2@main"],
        "adapters on different bases: ada1@main adapts m@",
    ),
    "an adapter of another base than --base": (
        [*MERGE, "--method", "task_arithmetic", "--base", "other@main", "ada1@main"],
        "ada1@main adapts m@",
    ),
    "an adapter without a recorded base": (
        [*MERGE, "--method", "task_arithmetic", "nobase@main"],
        "nobase@main is an adapter with no recorded base",
    ),
    "an adapter as the base": (
        [*MERGE, "--method", "task_arithmetic", "--base", "ada1@main", "m@a"],
        "the base ada1@main is an adapter",
    ),
    "a different vocabulary": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "bigvocab@main"],
        "tensor emb.weight is [51, 8], the base's is [50, 8] (a different vocabulary",
    ),
    "a different architecture": (
        [*MERGE, "--method", "task_arithmetic", "--base", "m@main", "fewer@main"],
        "fewer@main lacks 1 of the base's tensors (layer.norm.bias)",
    ),
    "integer tensors that differ": (
        [*MERGE, "--method", "task_arithmetic", "--base", "m@main", "m@ids"],
        "tensor 'ids' (I64) differs from the base's",
    ),
    "an adapter output of full models without a rank": (
        [
            *MERGE,
            "--method",
            "task_arithmetic",
            "--base",
            "m@main",
            "m@a",
            "--as-adapter",
            "--output",
            "x",
        ],
        "needs --rank",
    ),
    "an adapter output of a 1-D change": (
        [
            *MERGE,
            "--method",
            "task_arithmetic",
            "--base",
            "m@main",
            "m@a",
            "--as-adapter",
            "--rank",
            "2",
            "--output",
            "x",
        ],
        "tensor layer.norm.bias (1-D) is changed by the merge",
    ),
    "fisher without a recorded Fisher": (
        [*MERGE, "--method", "fisher", "m@a", "m@b"],
        "m@a: no Fisher recorded for commit",
    ),
    "no such model": (
        [*MERGE, "--method", "linear", "m@a", "mm@b"],
        "no model named 'mm'",
    ),
    "no such ref": (
        [*MERGE, "--method", "linear", "m@a", "m@c"],
        "m has no branch, tag or commit 'c'",
    ),
    "rebase onto an adapter": (
        ["model", "rebase", "m@a", "--onto", "ada1@main"],
        "ada1@main is an adapter: rebase onto a model",
    ),
    "rebase of a commit, not a branch, without --branch": (
        ["model", "rebase", "m@a~1", "--onto", "m@b"],
        "m@a~1 is not a branch: give --branch",
    ),
    "rebase onto a model sharing no commit": (
        ["model", "rebase", "m@a", "--onto", "other@main"],
        "share no commit: give the base the finetune started from (--from)",
    ),
    "rebase onto its own base": (
        ["model", "rebase", "m@a", "--onto", "m@main"],
        "m@a is already based on m@main",
    ),
    "--dev without --auto": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--dev", "m@a=d@v1"],
        "--dev is an option of --auto",
    ),
    "--lambdas without --auto": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--lambdas", "1"],
        "--lambdas is an option of --auto",
    ),
    "--auto with --lambda": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--auto", "--lambda", "1"],
        "--auto chooses --lambda and --density: give --lambdas/--densities",
    ),
    "--auto of a method without lambda": (
        [*MERGE, "--method", "linear", "m@a", "m@b", "--auto"],
        "--auto chooses λ, and method linear has none",
    ),
    "--auto writing an adapter": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--auto", "--as-adapter"],
        "--auto scores full merges: drop --as-adapter",
    ),
    "--auto with no evaluation to choose on": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--auto"],
        "m@a has no recorded classification evaluation to choose λ on: give --dev m@a=",
    ),
    "--dev naming no input": (
        [
            *MERGE,
            "--method",
            "ties",
            "--base",
            "m@main",
            "m@a",
            "m@b",
            "--auto",
            "--dev",
            "m@c=d@v1",
        ],
        "--dev m@c: not an input of the merge",
    ),
    "--dev without a dataset": (
        [*MERGE, "--method", "ties", "--base", "m@main", "m@a", "m@b", "--auto", "--dev", "m@a"],
        "--dev 'm@a': expected INPUT=DATASET@REF[:SPLIT]",
    ),
    "--lambdas that are not numbers": (
        [
            *MERGE,
            "--method",
            "ties",
            "--base",
            "m@main",
            "m@a",
            "m@b",
            "--auto",
            "--lambdas",
            "1,x",
        ],
        "--lambdas '1,x': expected numbers separated by commas",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_cli_refuses_in_one_line_and_records_nothing(root: Path, case: str) -> None:
    args, contains = CASES[case]
    cli_refused(root, *args, contains=contains)


API_CASES: dict[str, tuple[Callable[[Repository], object], type[FmforgeError], str]] = {
    "unknown method": (
        lambda repo: merge(repo, MergeSpec.build("soup", ["m@a"])), InvalidMerge, "'soup'",
    ),
    "a spec with an unknown field": (
        lambda repo: parse_spec({"method": "linear", "inputs": [{"model": "m@a"}], "lr": 1}),
        InvalidMerge, "merge spec: lr: Extra inputs are not permitted",
    ),
    "no inputs": (
        lambda repo: parse_spec({"method": "linear", "inputs": []}),
        InvalidMerge, "merge spec: inputs: ",
    ),
    "adapters on different bases": (
        lambda repo: merge(repo, MergeSpec.build("ties", ["ada1@main", "ada2@main"])),
        InvalidMerge, "adapters on different bases",
    ),
    "three adapters, one of another base": (
        lambda repo: merge(repo, MergeSpec.build("linear", ["ada1@main", "ada3@main",
                                                            "ada2@main"])),
        InvalidMerge, "ada2@main adapts other@",
    ),
    "rebase with --from naming nothing": (
        lambda repo: rebase(repo, "m@a", "m@b", old_base="m@nowhere"),
        RefNotFound, "m has no branch, tag or commit 'nowhere'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", API_CASES)
def test_library_refuses_in_one_line_and_records_nothing(root: Path, case: str) -> None:
    call, error, contains = API_CASES[case]
    with Repository.open(root) as repo:
        api_refused(root, lambda: call(repo), error, contains=contains)
