"""Mixed-adapter batches: one base matmul plus a batched gather of each row's LoRA factors.

Every served LoRA target (a ``nn.Linear`` of the base model) is wrapped in a
``BatchedLoRALinear``. The adapters' factors live in preallocated stacks, one per target::

    A[target]: (slots + 1, max_rank, in)     B[target]: (slots + 1, out, max_rank)

Slot 0 is all zeros (the base model); loading an adapter is one copy into a slot (rank padded
with zeros, scaling folded into B), never a model rebuild. A forward pass computes
``y = x W^T`` for the whole batch, then, for the rows' slots ``s`` (``LoRAContext``), gathers
``A[s]`` and ``B[s]`` with one ``index_select`` each and adds ``bmm(bmm(x, A[s]^T), B[s]^T)``:
two batched matmuls per layer whatever the number of distinct adapters (no Python loop per
adapter). The gathered factors are kept while the batch's composition stands (decode steps
between joins and leaves reuse them). A batch on one adapter uses plain matmuls; a batch on
the base alone skips LoRA entirely.

``BatchKV`` holds the running batch's key/value cache for Hugging Face models: rows are
left-padded to a common width, rows join (their prefill's cache padded to fit) and leave
(selected out) at token boundaries, and columns every row pads are trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fmforge.serving.adapters import AdapterWeights

EXCLUDED = re.compile(r"(^|\.)(lm_head|classifier|score|pooler(\..*)?)$")
"""Linear layers never adapted: output heads and the pooler (PEFT keeps those whole)."""


def lora_targets(model: nn.Module, suffixes: Iterable[str] | None) -> dict[str, tuple[int, int]]:
    """The served LoRA targets: module path -> (in, out) features, for every ``nn.Linear``
    whose name ends with one of ``suffixes`` (all linear layers of the blocks when None)."""
    wanted = tuple(suffixes) if suffixes is not None else None
    found: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or EXCLUDED.search(name):
            continue
        last = name.rsplit(".", 1)[-1]
        if wanted is None or last in wanted or any(name.endswith("." + w) for w in wanted):
            found[name] = (module.in_features, module.out_features)
    return found


class LoRAContext:
    """Which slot each row of the running batch uses; shared by every batched layer."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # (batch,) slot per row, when rows differ
        self.single: int | None = None  # the one slot every row uses (not the base)
        self.version = 0

    def set(self, slots: Sequence[int], device: torch.device | str) -> None:
        distinct = set(slots)
        self.version += 1
        self.rows = None
        self.single = None
        if distinct <= {0}:
            return
        if len(distinct) == 1:
            self.single = slots[0]
        else:
            self.rows = torch.tensor(list(slots), dtype=torch.long, device=device)

    def changed(self) -> None:
        """A slot's contents changed: gathered factors must be gathered again."""
        self.version += 1


class LoRASlots:
    """Preallocated stacks of every target's factors (and classification heads)."""

    def __init__(
        self,
        targets: Mapping[str, tuple[int, int]],
        count: int,
        max_rank: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        head: tuple[int, int] | None = None,
        pooler: int | None = None,
    ) -> None:
        self.targets = dict(targets)
        self.count = count
        self.max_rank = max_rank
        self.device = torch.device(device)
        self.dtype = dtype
        n = count + 1
        self.A = {
            m: torch.zeros(n, max_rank, fin, device=device, dtype=dtype)
            for m, (fin, _fout) in self.targets.items()
        }
        self.B = {
            m: torch.zeros(n, fout, max_rank, device=device, dtype=dtype)
            for m, (_fin, fout) in self.targets.items()
        }
        self.head_dims = head
        self.slot_bytes = self.bytes_per_slot(
            self.targets, max_rank, torch.empty((), dtype=dtype).element_size(), head, pooler
        )
        self.head_w = self.head_b = None
        if head is not None:
            hidden, labels = head
            self.head_w = torch.zeros(n, labels, hidden, device=device, dtype=dtype)
            self.head_b = torch.zeros(n, labels, device=device, dtype=dtype)
        # A retrained pooler (dense + tanh on the first token) per slot; False: the base's.
        self.pooler_dims = pooler
        self.pool_w = self.pool_b = None
        if pooler is not None:
            self.pool_w = torch.zeros(n, pooler, pooler, device=device, dtype=dtype)
            self.pool_b = torch.zeros(n, pooler, device=device, dtype=dtype)
        self.pooled_own = [False] * n
        self.labels: list[list[str]] = [[] for _ in range(n)]
        self.context = LoRAContext()

    @staticmethod
    def bytes_per_slot(
        targets: Mapping[str, tuple[int, int]],
        max_rank: int,
        itemsize: int,
        head: tuple[int, int] | None = None,
        pooler: int | None = None,
    ) -> int:
        total = sum(max_rank * (fin + fout) for fin, fout in targets.values())
        if head is not None:
            total += head[1] * (head[0] + 1)
        if pooler is not None:
            total += pooler * (pooler + 1)
        return total * itemsize

    def write(self, slot: int, weights: AdapterWeights) -> None:
        """Copy ``weights`` into ``slot`` (rank padded with zeros)."""
        if not 1 <= slot <= self.count:
            raise IndexError(f"slot {slot} outside 1..{self.count}")
        for module in self.targets:
            a_stack, b_stack = self.A[module][slot], self.B[module][slot]
            a_stack.zero_()
            b_stack.zero_()
            pair = weights.modules.get(module)
            if pair is not None:
                a, b = pair
                rank = a.shape[0]
                a_stack[:rank].copy_(a, non_blocking=True)
                b_stack[:, :rank].copy_(b, non_blocking=True)
        if self.head_w is not None and self.head_b is not None:
            self.head_w[slot].zero_()
            self.head_b[slot].zero_()
            if weights.head is not None:
                weight, bias = weights.head
                self.head_w[slot, : weight.shape[0]].copy_(weight, non_blocking=True)
                if bias is not None:
                    self.head_b[slot, : bias.shape[0]].copy_(bias, non_blocking=True)
        self.pooled_own[slot] = weights.pooler is not None
        if weights.pooler is not None:
            if self.pool_w is None or self.pool_b is None:
                raise ValueError("these slots hold no poolers")
            self.pool_w[slot].copy_(weights.pooler[0], non_blocking=True)
            self.pool_b[slot].copy_(weights.pooler[1], non_blocking=True)
        self.labels[slot] = list(weights.labels)
        self.context.changed()

    def classify(
        self, pooled: torch.Tensor, slots: Sequence[int], first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of each row under its slot's head: (batch, max_labels). ``first``: each
        row's first-token hidden state, which rows whose adapter retrained the pooler pool
        through their own (``tanh(W h + b)``, as BERT's pooler)."""
        if self.head_w is None or self.head_b is None:
            raise ValueError("these slots hold no classification heads")
        index = torch.tensor(list(slots), dtype=torch.long, device=pooled.device)
        own = [i for i, s in enumerate(slots) if self.pooled_own[s]]
        if own and first is not None and self.pool_w is not None and self.pool_b is not None:
            rows = torch.tensor(own, dtype=torch.long, device=pooled.device)
            which = index.index_select(0, rows)
            weight = self.pool_w.index_select(0, which)  # (rows, hidden, hidden)
            dense = torch.bmm(weight, first.index_select(0, rows).unsqueeze(-1)).squeeze(-1)
            pooled = pooled.clone()
            pooled[rows] = torch.tanh(dense + self.pool_b.index_select(0, which))
        weight = self.head_w.index_select(0, index)  # (batch, labels, hidden)
        bias = self.head_b.index_select(0, index)
        return torch.bmm(weight, pooled.unsqueeze(-1)).squeeze(-1) + bias


class BatchedLoRALinear(nn.Module):
    """A base ``nn.Linear`` plus each row's LoRA delta from the shared slots."""

    def __init__(self, base: nn.Linear, name: str, slots: LoRASlots) -> None:
        super().__init__()
        self.base = base
        self.name = name
        self._slots = [slots]  # a list: not registered as a submodule or buffer
        self._gathered: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        slots = self._slots[0]
        ctx = slots.context
        if ctx.single is None and ctx.rows is None:
            return y
        cached = self._gathered
        if cached is None or cached[0] != ctx.version:
            a_all, b_all = slots.A[self.name], slots.B[self.name]
            if ctx.single is not None:
                a = a_all[ctx.single].t().contiguous()  # (in, rank)
                b = b_all[ctx.single].t().contiguous()  # (rank, out)
            else:
                assert ctx.rows is not None
                a = a_all.index_select(0, ctx.rows).transpose(1, 2).contiguous()
                b = b_all.index_select(0, ctx.rows).transpose(1, 2).contiguous()
            cached = self._gathered = (ctx.version, a, b)
        _, a, b = cached
        # The delta is added into y in place (y is this call's own output): one pass less.
        if ctx.single is not None:
            flat = y.view(-1, y.shape[-1])
            flat.addmm_(x.reshape(-1, x.shape[-1]) @ a, b)
            return y
        rows = y.view(y.shape[0], -1, y.shape[-1])
        rows.baddbmm_(torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), a), b)
        return y


def inject(model: nn.Module, slots: LoRASlots) -> None:
    """Wrap every target of ``slots`` in ``model`` with a ``BatchedLoRALinear``."""
    for name in slots.targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        if isinstance(base, BatchedLoRALinear):
            continue
        setattr(parent, child, BatchedLoRALinear(base, name, slots))


# ---- the running batch's key/value cache ------------------------------------------------------


class BatchKV:
    """The running batch's Hugging Face cache; per layer keys and values of shape (batch,
    heads, width, head_dim), rows left-padded. The cache object the model returned is kept
    between decode steps (no copy); joins, leaves and trims replace its tensors."""

    def __init__(self, cache: Any = None) -> None:
        self.cache = cache

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.cache is None:
            return []
        layers = getattr(self.cache, "layers", None)
        if layers is not None:
            return [(layer.keys, layer.values) for layer in layers]
        return [(k, v) for k, v in self.cache.to_legacy_cache()]  # older transformers

    def _set(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        from transformers.cache_utils import DynamicCache

        if self.cache is not None and getattr(self.cache, "layers", None) is not None:
            for layer, (k, v) in zip(self.cache.layers, layers, strict=True):
                layer.keys, layer.values = k, v
        else:
            self.cache = DynamicCache.from_legacy_cache(tuple(layers))  # type: ignore[arg-type]

    @property
    def width(self) -> int:
        layers = self.layers
        return int(layers[0][0].shape[2]) if layers else 0

    @property
    def rows(self) -> int:
        layers = self.layers
        return int(layers[0][0].shape[0]) if layers else 0

    def select(self, rows: torch.Tensor) -> None:
        self._set([(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.layers])

    def trim(self, columns: int) -> None:
        """Drop the first ``columns`` (padding in every row)."""
        if columns > 0:
            self._set([(k[:, :, columns:], v[:, :, columns:]) for k, v in self.layers])

    def extend(self, other: BatchKV) -> tuple[int, int]:
        """Append ``other``'s rows; the narrower side is left-padded. Returns the columns
        added in front of (this batch's rows, the other's rows)."""
        if self.cache is None:
            self.cache = other.cache
            return 0, 0
        mine, theirs = self.width, other.width
        width = max(mine, theirs)
        joined = []
        for (k1, v1), (k2, v2) in zip(self.layers, other.layers, strict=True):
            joined.append(
                (
                    torch.cat([_left_pad(k1, width - mine), _left_pad(k2, width - theirs)]),
                    torch.cat([_left_pad(v1, width - mine), _left_pad(v2, width - theirs)]),
                )
            )
        self._set(joined)
        return width - mine, width - theirs


def _left_pad(t: torch.Tensor, columns: int) -> torch.Tensor:
    if columns == 0:
        return t
    pad = torch.zeros(*t.shape[:2], columns, t.shape[3], dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], dim=2)
