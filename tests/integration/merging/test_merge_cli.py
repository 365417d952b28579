"""``fmforge model merge``: the commit line, the most conflicted tensors (names printed as
typed), ``--json``, and an adapter output."""

from __future__ import annotations

import json

import numpy as np

from fmforge.models import CommitReader, commit_tensors
from fmforge.repository import Repository
from tests.clirunner import fm

ODD = "layer.[red]q[/red].weight"  # a tensor name rich would read as markup


def _models(repo: Repository) -> None:
    rng = np.random.default_rng(0)
    base = {ODD: rng.standard_normal((8, 8)).astype(np.float32),
            "norm": np.ones(8, np.float32)}  # fmt: skip
    commit_tensors(repo, "m", base, message="base")
    for branch, sign in (("a", 1.0), ("b", -1.0)):
        tuned = dict(base)
        tuned[ODD] = base[ODD] + sign * rng.random((8, 8)).astype(np.float32)
        commit_tensors(repo, "m", tuned, message=branch, branch=branch)


def test_merge_prints_the_commit_and_the_most_conflicted_tensors(repo: Repository) -> None:
    _models(repo)
    root = repo.path.parent
    code, out = fm(root, "model", "merge", "--method", "ties", "--base", "m@main", "m@a", "m@b",
                   "--density", "0.5", "--weights", "1,0.5")  # fmt: skip
    assert code == 0, out
    head = CommitReader(repo, "m@merge/ties").commit
    assert out.startswith(f"[m merge/ties {head[:12]}] merge ties of 2 input(s)")
    assert "1 tensors merged, 1 unchanged" in out
    assert "most conflicted tensors" in out
    (line,) = [line for line in out.splitlines() if ODD in line]  # literal, whole
    assert "sign conflict 1.000" in line


def test_merge_json_holds_the_report_and_provenance(repo: Repository) -> None:
    _models(repo)
    args = ["--method", "task_arithmetic", "--base", "m@main", "m@a", "m@b", "--lambda", "0.5"]
    code, out = fm(repo.path.parent, "model", "merge", *args, "--json", "--branch", "ta")
    assert code == 0, out
    record = json.loads(out)
    assert record["branch"] == "ta"
    assert record["provenance"]["spec"]["lambda"] == 0.5
    assert record["provenance"]["report"] == record["report_object"]
    (tensor,) = record["report"]["tensors"]
    assert tensor["name"] == ODD
    assert tensor["cosine"][0][1] < 0  # one moved it up, the other down
    assert repo.objects.has(record["report_object"])


def test_merge_as_an_adapter_reports_its_reconstruction(repo: Repository) -> None:
    rng = np.random.default_rng(1)
    base = {"q.weight": rng.standard_normal((16, 16)).astype(np.float32)}
    commit_tensors(repo, "m", base, message="base")
    low_rank = np.outer(rng.standard_normal(16), rng.standard_normal(16)).astype(np.float32)
    commit_tensors(repo, "m", {"q.weight": base["q.weight"] + low_rank}, message="a", branch="a")
    code, out = fm(repo.path.parent, "model", "merge", "--method", "task_arithmetic", "--base",
                   "m@main", "m@a", "--as-adapter", "--rank", "2", "--output", "m-lora",
                   "--branch", "main")  # fmt: skip
    assert code == 0, out
    assert "adapter of rank 2: relative reconstruction error" in out
    reader = CommitReader(repo, "m-lora@main")
    assert reader.manifest["adapter"]["r"] == 2
    assert sorted(name for name, _, _ in reader.tensors()) == [
        "base_model.model.q.lora_A.weight", "base_model.model.q.lora_B.weight",
    ]  # fmt: skip
