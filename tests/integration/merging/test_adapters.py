"""PEFT adapters merged exactly in delta space, on a small BERT with real PEFT adapters: each
kind (plain, rsLoRA, alpha_pattern, DoRA, lora_bias, embeddings) as PEFT itself merges it; the
streamed merge equals the dense merge of the updates; adapter output by SVD that PEFT loads."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, BertModel

from fmforge.merging import MergeSpec, merge
from fmforge.models import CommitReader, checkout, commit_model
from fmforge.repository import Repository
from tests.unit.merging import reference as ref

CONFIG = BertConfig(
    vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=40,
)  # fmt: skip
KINDS: dict[str, dict[str, Any]] = {
    "plain": {},
    "rslora": {"use_rslora": True},
    "alpha_pattern": {"alpha_pattern": {"value": 32}},
    "dora": {"use_dora": True},
    "lora_bias": {"lora_bias": True},
    "embedding": {"target_modules": ["word_embeddings", "query"]},
}


@dataclass
class Tiny:
    repo: Repository
    base_dir: Path
    merged: dict[str, dict[str, torch.Tensor]]  # kind -> PEFT's merge_and_unload body weights
    adapters: dict[str, dict[str, torch.Tensor]]  # kind -> adapter tensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiny]:
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    base_dir = root / "base"
    BertModel(CONFIG).save_pretrained(base_dir)
    merged, adapters = {}, {}
    with Repository.init(root) as repo, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers and PEFT warn about fresh heads
        commit_model(repo, "tiny", base_dir, "a small BERT")
        for i, (kind, options) in enumerate([*KINDS.items(), ("second", {})]):
            torch.manual_seed(100 + i)
            model = BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
            config = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
                      "task_type": "SEQ_CLS", **options}  # fmt: skip
            peft_model = get_peft_model(model, LoraConfig(**config))
            with torch.no_grad():
                for name, parameter in peft_model.named_parameters():
                    if "lora_" in name:  # B (and an embedding's A) start at zero
                        parameter.add_(0.1 * torch.randn_like(parameter))
            peft_model.save_pretrained(root / kind)
            commit_model(repo, kind, root / kind, f"{kind} adapter", base="tiny@main")
            adapters[kind] = load_file(str(root / kind / "adapter_model.safetensors"))
            body = peft_model.merge_and_unload().bert.state_dict()
            merged[kind] = {k: v.detach().clone() for k, v in body.items()}
        yield Tiny(repo, base_dir, merged, adapters)


def _tensors(repo: Repository, target: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, data, spec in CommitReader(repo, target).iter_tensors():
        dtype = torch.float32 if spec.dtype == "F32" else torch.int64
        out[name] = torch.frombuffer(bytearray(data), dtype=dtype).reshape(spec.shape)
    return out


def _update(adapters: dict[str, torch.Tensor], module: str, scale: float) -> torch.Tensor:
    prefix = f"base_model.model.bert.{module}"
    return ref.lora_update(adapters[f"{prefix}.lora_A.weight"],
                           adapters[f"{prefix}.lora_B.weight"], scale)  # fmt: skip


class TestEachAdapterAsPeftMergesIt:
    @pytest.mark.parametrize("kind", list(KINDS))
    def test_weight_one_gives_peft_merge_and_unload(self, tiny: Tiny, kind: str) -> None:
        spec = MergeSpec.build("task_arithmetic", [f"{kind}@main"])
        result = merge(tiny.repo, spec, name="tiny", branch=f"one-{kind}")
        got = _tensors(tiny.repo, result.target)
        base = _tensors(tiny.repo, "tiny@main")
        expected = tiny.merged[kind]
        changed = 0
        for name, tensor in got.items():
            assert torch.allclose(tensor, expected[name], rtol=1e-5, atol=1e-6), name
            if not torch.equal(tensor, base[name]):
                changed += 1
            else:  # untouched tensors are the base's, bit for bit
                assert torch.equal(expected[name], base[name]), name
        # query and value of both layers; their biases too with lora_bias; the embeddings and
        # the queries for the embedding adapter
        assert changed == {"lora_bias": 8, "embedding": 3}.get(kind, 4)
        assert result.not_merged == [
            "base_model.model.classifier.bias", "base_model.model.classifier.weight"
        ]  # fmt: skip


class TestDeltaSpace:
    def test_streamed_merge_equals_the_dense_merge_of_the_updates(self, tiny: Tiny) -> None:
        spec = MergeSpec.build("task_arithmetic", ["plain@main", "second@main"],
                               weights=[0.7, -0.4], **{"lambda": 1.3})  # fmt: skip
        whole = merge(tiny.repo, spec, name="tiny", branch="dense")
        rows = merge(tiny.repo, spec, name="tiny", branch="rows", chunk_bytes=64)
        hashes = [{n: h for n, h, _ in CommitReader(tiny.repo, r.target).tensors()}
                  for r in (whole, rows)]  # fmt: skip
        assert hashes[0] == hashes[1]
        got = _tensors(tiny.repo, rows.target)
        base = _tensors(tiny.repo, "tiny@main")
        for layer in range(2):
            for proj in ("query", "value"):
                module = f"encoder.layer.{layer}.attention.self.{proj}"
                deltas = [_update(tiny.adapters[k], module, 2.0) for k in ("plain", "second")]
                mixed = (torch.stack(deltas) * torch.tensor([0.7, -0.4], dtype=torch.float64)
                         .reshape(-1, 1, 1)).sum(dim=0) * 1.3  # fmt: skip
                expected = (base[f"{module}.weight"].double() + mixed).float()
                assert torch.equal(got[f"{module}.weight"], expected), module

    def test_ties_on_adapters_trims_the_exact_updates(self, tiny: Tiny) -> None:
        spec = MergeSpec.build("ties", ["plain@main", "second@main"], density=0.3,
                               compute_dtype="float64")  # fmt: skip
        got = _tensors(tiny.repo, merge(tiny.repo, spec, name="tiny", branch="ties").target)
        base = _tensors(tiny.repo, "tiny@main")
        module = "encoder.layer.1.attention.self.value"
        deltas = [_update(tiny.adapters[k], module, 2.0) for k in ("plain", "second")]
        expected = ref.gta(base[f"{module}.weight"], [], [1.0, 1.0], dtype=torch.float64,
                           density=0.3, trim=True, elect=True, normalize=True,
                           task_vectors=deltas)  # fmt: skip
        assert torch.equal(got[f"{module}.weight"], expected)

    def test_factor_by_factor_would_add_cross_terms(self, tiny: Tiny) -> None:
        """PEFT's `linear` combination (huggingface/peft#3004) against the exact one."""
        spec = MergeSpec.build("task_arithmetic", ["plain@main", "second@main"],
                               weights=[1, -1])  # fmt: skip
        got = _tensors(tiny.repo, merge(tiny.repo, spec, name="tiny", branch="diff").target)
        base = _tensors(tiny.repo, "tiny@main")
        module = "encoder.layer.0.attention.self.query"
        a1, a2 = (tiny.adapters[k][f"base_model.model.bert.{module}.lora_A.weight"]
                  for k in ("plain", "second"))  # fmt: skip
        b1, b2 = (tiny.adapters[k][f"base_model.model.bert.{module}.lora_B.weight"]
                  for k in ("plain", "second"))  # fmt: skip
        exact = 2.0 * (b1 @ a1 - b2 @ a2)
        factorwise = 2.0 * ((b1 - b2) @ (a1 - a2))  # sqrt-weights on each factor: [1, -1]
        ours = got[f"{module}.weight"] - base[f"{module}.weight"]
        assert torch.allclose(ours, exact, atol=1e-5)
        assert not torch.allclose(factorwise, exact, atol=1e-2)


class TestAdapterOutput:
    def test_at_the_summed_rank_the_adapter_is_exact_and_peft_loads_it(
        self, tiny: Tiny, tmp_path: Path
    ) -> None:
        spec = MergeSpec.build("task_arithmetic", ["plain@main", "second@main"],
                               weights=[0.5, 0.5])  # fmt: skip
        full = _tensors(tiny.repo, merge(tiny.repo, spec, name="tiny", branch="ta").target)
        as_adapter = MergeSpec.build("task_arithmetic", ["plain@main", "second@main"],
                                     weights=[0.5, 0.5], output="adapter")  # fmt: skip
        result = merge(tiny.repo, as_adapter, name="merged-adapter", branch="main")
        assert result.reconstruction is not None
        assert result.reconstruction["rank"] == 8
        assert result.reconstruction["relative_error"] < 1e-12
        info = CommitReader(tiny.repo, result.target)
        assert "adapter" in info.manifest
        assert info.info.base == f"tiny@{CommitReader(tiny.repo, 'tiny@main').commit}"
        out = checkout(tiny.repo, result.target, tmp_path / "adapter").directory
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the inputs adapt a classifier over the base (module paths under "bert.")
            model = BertForSequenceClassification.from_pretrained(tiny.base_dir, num_labels=3)
            loaded = PeftModel.from_pretrained(model, out)
            weights = loaded.merge_and_unload().bert.state_dict()
        for name, tensor in full.items():
            assert torch.allclose(weights[name], tensor, atol=1e-6), name

    def test_a_lower_rank_reports_its_reconstruction_error(self, tiny: Tiny) -> None:
        spec = MergeSpec.build("task_arithmetic", ["plain@main", "second@main"],
                               output="adapter", rank=2)  # fmt: skip
        result = merge(tiny.repo, spec, name="merged-adapter", branch="rank2")
        assert result.reconstruction is not None
        module = "encoder.layer.0.attention.self.query"
        dense = sum(_update(tiny.adapters[k], module, 2.0) for k in ("plain", "second"))
        s = np.linalg.svd(np.asarray(dense), compute_uv=False)
        expected = math.sqrt(float((s[2:] ** 2).sum() / (s**2).sum()))
        found = next(t for t in result.reconstruction["tensors"]
                     if t["name"] == f"{module}.weight")  # fmt: skip
        assert found["relative_error"] == pytest.approx(expected, rel=1e-5)
        assert 0 < result.reconstruction["relative_error"] < 1
        lora_a = _tensors(tiny.repo, result.target)[f"base_model.model.bert.{module}.lora_A.weight"]
        assert lora_a.shape == (2, 32)
