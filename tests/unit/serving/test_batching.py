"""Batched LoRA layers against the per-row computation, and the batch's key/value cache."""

from __future__ import annotations

import torch
from torch import nn

from fmforge.serving.adapters import AdapterWeights
from fmforge.serving.batching import BatchedLoRALinear, BatchKV, LoRASlots, inject


def adapter(seed: int, rank: int, fin: int = 16, fout: int = 12) -> AdapterWeights:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rank, fin, generator=g, dtype=torch.float64)
    b = torch.randn(fout, rank, generator=g, dtype=torch.float64)
    return AdapterWeights(f"{seed:064x}", {"lin": (a, b)})


def test_every_row_gets_its_own_adapter_in_one_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(16, 12).double())
    slots = LoRASlots({"lin": (16, 12)}, count=3, max_rank=8, dtype=torch.float64)
    adapters = [adapter(1, 4), adapter(2, 8), adapter(3, 2)]  # ranks padded to 8
    for slot, weights in enumerate(adapters, 1):
        slots.write(slot, weights)
    base = model.lin
    inject(model, slots)
    assert isinstance(model.lin, BatchedLoRALinear)
    x = torch.randn(5, 7, 16, dtype=torch.float64)
    rows = [0, 1, 2, 3, 2]
    slots.context.set(rows, "cpu")
    got = model(x)
    for i, slot in enumerate(rows):
        expected = base(x[i])
        if slot:
            a, b = adapters[slot - 1].modules["lin"]
            expected = expected + x[i] @ a.T @ b.T
        assert torch.allclose(got[i], expected, atol=1e-12)
    slots.context.set([2, 2], "cpu")  # one adapter: plain matmuls
    a, b = adapters[1].modules["lin"]
    assert torch.allclose(model(x[:2]), base(x[:2]) + x[:2] @ a.T @ b.T, atol=1e-12)
    slots.context.set([0, 0], "cpu")  # the base alone
    assert torch.equal(model(x[:2]), base(x[:2]))


def test_rewriting_a_slot_is_seen_by_the_next_pass() -> None:
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(16, 12).double())
    slots = LoRASlots({"lin": (16, 12)}, count=2, max_rank=4, dtype=torch.float64)
    inject(model, slots)
    slots.write(1, adapter(1, 4))
    slots.context.set([1, 0], "cpu")
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    before = model(x)
    slots.write(1, adapter(9, 4))
    after = model(x)
    assert not torch.allclose(before[0], after[0])
    assert torch.equal(before[1], after[1])


def test_the_batch_cache_joins_selects_and_trims() -> None:
    from transformers.cache_utils import DynamicCache

    ones = torch.ones(2, 1, 3, 4)
    twos = torch.full((1, 1, 5, 4), 2.0)
    a = BatchKV(DynamicCache(ddp_cache_data=[(ones, ones)]))
    b = BatchKV(DynamicCache(ddp_cache_data=[(twos, twos)]))
    assert a.extend(b) == (2, 0)  # the old rows are padded in front
    keys = a.layers[0][0]
    assert keys.shape == (3, 1, 5, 4)
    assert keys[0, 0, :2].abs().sum() == 0
    a.select(torch.tensor([2]))
    assert a.rows == 1
    a.trim(1)
    assert a.width == 4
