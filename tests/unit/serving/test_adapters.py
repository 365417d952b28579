"""Adapter weights through the host and disk tiers: a retrained pooler travels with the head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmforge.errors import AdapterIncompatible
from fmforge.serving.adapters import AdapterWeights, load_file, parse, save_file


def _weights() -> AdapterWeights:
    g = torch.Generator().manual_seed(0)
    return AdapterWeights(
        "c" * 64,
        {"encoder.layer.0.attention.self.query": (torch.randn(4, 8, generator=g),
                                                   torch.randn(8, 4, generator=g))},
        head=(torch.randn(3, 8, generator=g), torch.randn(3, generator=g)),
        labels=["neg", "neu", "pos"],
        pooler=(torch.randn(8, 8, generator=g), torch.randn(8, generator=g)),
    )  # fmt: skip


def test_a_pooler_survives_the_disk_tier_and_the_host_copy(tmp_path: Path) -> None:
    weights = _weights()
    save_file(tmp_path / "a.safetensors", weights)
    for back in (load_file(tmp_path / "a.safetensors"), weights.to("cpu", torch.float64)):
        assert back.pooler is not None
        assert weights.pooler is not None
        assert torch.equal(back.pooler[0].double(), weights.pooler[0].double())
        assert torch.equal(back.pooler[1].double(), weights.pooler[1].double())
        assert back.labels == weights.labels
    assert weights.nbytes == sum(
        t.nbytes for t in (*weights.modules["encoder.layer.0.attention.self.query"],
                           weights.head[0], weights.head[1], *weights.pooler)  # type: ignore[index,misc]
    )  # fmt: skip


def test_peft_names_of_a_retrained_pooler_are_read_as_the_pooler() -> None:
    tensors = {
        "base_model.model.bert.pooler.dense.weight": torch.ones(8, 8),
        "base_model.model.bert.pooler.dense.bias": torch.zeros(8),
        "base_model.model.classifier.weight": torch.ones(2, 8),
    }
    weights = parse("a@1", "c", tensors, {"lora_alpha": 8}, {})
    assert weights.pooler is not None
    assert weights.pooler[0].shape == (8, 8)
    del tensors["base_model.model.bert.pooler.dense.bias"]
    with pytest.raises(AdapterIncompatible, match="pooler lacks a weight or a bias"):
        parse("a@1", "c", tensors, {"lora_alpha": 8}, {})
