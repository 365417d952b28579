"""Rebasing a finetune onto an updated base: a full finetune's task vector re-applied exactly, an
adapter moved to the new base, the conflict check against the base's update, the recorded
evaluations re-run, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from fmforge.merging.rebase import rebase
from fmforge.models import CommitReader, commit_tensors
from fmforge.models.evaluations import EvaluationRecord
from fmforge.models.events import CommitEvaluated
from fmforge.repository import Repository
from tests.clirunner import fm


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(48, 16, generator=g), "v": torch.randn(16, 16, generator=g),
        "b": torch.randn(16, generator=g), "ids": torch.arange(5),
    }  # fmt: skip


@pytest.fixture
def history(repo: Repository) -> dict[str, dict[str, torch.Tensor]]:
    """main: base, then a fix of w and b; ft (from base): a finetune of w and v."""
    g = torch.Generator().manual_seed(1)
    base = _weights()
    commit_tensors(repo, "m", base, message="base")
    ft = dict(base, w=base["w"] + 0.05 * torch.randn(48, 16, generator=g),
              v=base["v"] * 1.01)  # fmt: skip
    commit_tensors(repo, "m", ft, message="finetune", branch="ft")
    fix = dict(base, w=base["w"] - 0.05 * torch.randn(48, 16, generator=g), b=base["b"] + 1)
    commit_tensors(repo, "m", fix, message="fix", branch="main")
    return {"base": base, "ft": ft, "fix": fix}


def _read(repo: Repository, target: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, data, spec in CommitReader(repo, target).iter_tensors():
        dtype = torch.float32 if spec.dtype == "F32" else torch.int64
        out[name] = torch.frombuffer(bytearray(data), dtype=dtype).reshape(spec.shape)
    return out


class TestFullFinetune:
    def test_reapplies_the_task_vector_exactly(
        self, repo: Repository, history: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        ft_commit = CommitReader(repo, "m@ft").commit
        main_commit = CommitReader(repo, "m@main").commit
        result = rebase(repo, "m@ft", "m@main")
        assert result.commit.parents == (ft_commit, main_commit)
        assert CommitReader(repo, "m@ft").commit == result.commit.commit  # the branch moved on
        assert result.old_base == f"m@{CommitReader(repo, 'm@main~1').commit}"
        got = _read(repo, "m@ft")
        base, ft, fix = history["base"], history["ft"], history["fix"]
        assert torch.equal(got["v"], ft["v"])  # only the finetune changed it: its bits
        assert torch.equal(got["b"], fix["b"])  # only the base update changed it
        expected = ft["w"].double() - base["w"].double() + fix["w"].double()
        assert torch.equal(got["w"], expected.float())
        w = next(r for r in result.report["tensors"] if r["name"] == "w")
        assert -1 <= w["cosine"][0][1] <= 1
        assert w["overlap"] == 1.0  # both changed every entry of w
        assert result.not_evaluated is None  # the finetune had no recorded evaluation

    def test_reruns_the_recorded_evaluations(
        self, repo: Repository, history: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        ft = CommitReader(repo, "m@ft").commit
        repo.record("model/m", CommitEvaluated({
            "model": "m", "commit": ft, "dataset": "spam@v1", "dataset_version": "1" * 64,
            "split": "test", "metrics": {"accuracy": 0.91}, "rows": 250,
        }))  # type: ignore[arg-type]  # fmt: skip
        seen: list[tuple[str, str]] = []

        def evaluate(repo: Repository, target: str, record: EvaluationRecord) -> Mapping[str, Any]:
            seen.append((target, record.dataset))
            return {"accuracy": 0.93}

        result = rebase(repo, "m@ft", "m@main", evaluate=evaluate)
        assert seen == [(result.target, "spam@v1")]
        assert result.evaluations == [{
            "dataset": "spam@v1", "dataset_version": "1" * 64, "split": "test",
            "before": {"accuracy": 0.91}, "after": {"accuracy": 0.93},
        }]  # fmt: skip

    def test_an_evaluation_that_cannot_run_again_is_named(
        self, repo: Repository, history: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        # recorded on a dataset this repository does not hold (pulled from elsewhere)
        ft = CommitReader(repo, "m@ft").commit
        repo.record("model/m", CommitEvaluated({
            "model": "m", "commit": ft, "dataset": "spam@v1", "dataset_version": "1" * 64,
            "split": None, "metrics": {"accuracy": 0.9}, "rows": 10,
        }))  # type: ignore[arg-type]  # fmt: skip
        result = rebase(repo, "m@ft", "m@main", branch="rebased")
        assert result.not_evaluated is not None
        assert result.not_evaluated.startswith("1 recorded evaluation(s) not re-run: spam@v1: ")
        assert result.evaluations == []
        assert CommitReader(repo, "m@ft").commit == ft  # --branch: ft stays


class TestAdapter:
    def test_the_same_adapter_on_the_new_base(self, repo: Repository, tmp_path: Path) -> None:
        g = torch.Generator().manual_seed(2)
        base = {"layer.q.weight": torch.randn(16, 16, generator=g)}
        commit_tensors(repo, "body", base, message="v1")
        adapter = {
            "base_model.model.layer.q.lora_A.weight": torch.randn(2, 16, generator=g),
            "base_model.model.layer.q.lora_B.weight": torch.randn(16, 2, generator=g),
        }
        config = json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                             "target_modules": ["q"]}).encode()  # fmt: skip
        commit_tensors(repo, "ada", adapter, message="adapter", base="body@main",
                       path="adapter_model.safetensors",
                       files={"adapter_config.json": config})  # fmt: skip
        fixed = {"layer.q.weight": base["layer.q.weight"] + 0.1}
        commit_tensors(repo, "body", fixed, message="v2")
        before = CommitReader(repo, "ada@main")
        result = rebase(repo, "ada@main", "body@main")
        after = CommitReader(repo, "ada@main")
        new_base = CommitReader(repo, "body@main").commit
        assert after.commit == result.commit.commit
        assert after.info.base == f"body@{new_base}"
        assert after.info.parents == (before.commit, new_base)
        assert [t[1] for t in after.tensors()] == [t[1] for t in before.tensors()]
        assert "adapter" in after.manifest
        assert [r["name"] for r in result.report["tensors"]] == ["layer.q.weight"]


class TestCli:
    def test_rebase_prints_the_conflicts_and_json(
        self, repo: Repository, history: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        code, out = fm(repo.path.parent, "model", "rebase", "m@ft", "--onto", "m@main",
                       "--branch", "ft-rebased")  # fmt: skip
        assert code == 0, out
        assert "rebased full m from m@" in out
        assert "most conflicted tensors" in out
        code, out = fm(repo.path.parent, "model", "rebase", "m@ft", "--onto", "m@main",
                       "--branch", "ft-json", "--json")  # fmt: skip
        assert code == 0, out
        record = json.loads(out)
        assert record["parents"][1] == CommitReader(repo, "m@main").commit
        assert {t["name"] for t in record["report"]["tensors"]} == {"w", "v", "b"}
