"""A merge written as a LoRA adapter: each merged update re-factored by SVD at a given rank.

For each tensor the merge changes, the merged task vector ΔW (exact, in the compute dtype) is
decomposed as U·S·Vᵀ and truncated to rank r: ``lora_B = U_r·√S_r``, ``lora_A = √S_r·V_rᵀ``, with
``lora_alpha = r`` so PEFT's scale is 1. The relative error ‖ΔW - B·A‖_F / ‖ΔW‖_F (the discarded
singular values) is reported per tensor and overall. The default rank is the sum of the input
adapters' ranks on the module, at which a task-arithmetic or linear merge of adapters is exact
(PEFT's ``cat``); a smaller rank is PEFT's ``svd``. Factors narrower than the rank are padded
with zeros, so every module has the configured rank and PEFT loads the adapter as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.sources import torch_dtype
from fmforge.merging.stream import Engine

if TYPE_CHECKING:
    from fmforge.merging.planning import Resolved

_PREFIX = "base_model.model."


class AdapterOutput:
    def __init__(self, engine: Engine, inputs: list[Resolved], base: str, rank: int | None) -> None:
        self.engine = engine
        self.base = base
        self.paths: dict[str, str] = {}  # base tensor -> module path
        self.transposed: dict[str, bool] = {}
        self.kinds: dict[str, str] = {}
        ranks: dict[str, int] = {}
        self.template: dict[str, Any] = {}
        for found in inputs:
            if found.adapter is None:
                continue
            self.template = self.template or dict(found.config)
            for target, module in found.adapter.modules.items():
                self.paths.setdefault(target, module.path)
                self.transposed.setdefault(target, module.transposed)
                self.kinds.setdefault(target, module.kind)
                a = found.source.specs()[module.parts.get("A") or module.parts["embedding_A"]]
                ranks[target] = ranks.get(target, 0) + a.shape[0]
        if rank is None and not ranks:
            raise InvalidMerge("an adapter output of full models needs --rank")
        for job in engine.plan.jobs:  # known before any tensor is read: refused up front
            if job.passthrough is not None:
                continue
            if len(job.spec.shape) != 2:
                raise InvalidMerge(
                    f"tensor {job.name} ({len(job.spec.shape)}-D) is changed by the merge, and "
                    "an adapter holds updates of 2-D weights only: write a full model"
                )
            self.paths.setdefault(job.name, job.name.removesuffix(".weight"))
        self.rank = rank if rank is not None else max(ranks.values())
        self.errors: list[dict[str, Any]] = []
        self._squares = [0.0, 0.0]  # Σ‖ΔW - BA‖², Σ‖ΔW‖²

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for job, delta in self.engine.deltas():
            if job.name not in self.paths:
                continue
            if delta is None:  # every input's update of it is zero
                delta = torch.zeros(job.spec.shape, dtype=self.engine.dtype)
            path = self.paths[job.name]
            transposed = self.transposed.get(job.name, False)
            matrix = (delta.T if transposed else delta).to(torch.float64)
            b, a = self._factor(job.name, matrix)
            dtype = torch_dtype(job.spec, job.name)
            if self.kinds.get(job.name) == "embedding":
                names = (f"{_PREFIX}{path}.lora_embedding_A", f"{_PREFIX}{path}.lora_embedding_B")
            else:
                names = (f"{_PREFIX}{path}.lora_A.weight", f"{_PREFIX}{path}.lora_B.weight")
            yield names[0], a.to(dtype).contiguous()
            yield names[1], b.to(dtype).contiguous()

    def _factor(self, name: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        r = min(self.rank, s.shape[0])
        root = s[:r].sqrt()
        b = torch.zeros((matrix.shape[0], self.rank), dtype=matrix.dtype)
        a = torch.zeros((self.rank, matrix.shape[1]), dtype=matrix.dtype)
        b[:, :r] = u[:, :r] * root
        a[:r] = root.reshape(-1, 1) * vh[:r]
        total = float((s**2).sum())
        lost = float((s[r:] ** 2).sum())
        self._squares[0] += lost
        self._squares[1] += total
        self.errors.append({
            "name": name, "rank": r,
            "relative_error": float(f"{math.sqrt(lost / total) if total else 0.0:.6g}"),
        })  # fmt: skip
        return b, a

    def reconstruction(self) -> dict[str, Any]:
        lost, total = self._squares
        return {
            "rank": self.rank,
            "relative_error": float(f"{math.sqrt(lost / total) if total else 0.0:.6g}"),
            "tensors": self.errors,
        }

    def files(self) -> dict[str, bytes]:
        """``adapter_config.json``: rank, scale 1, every module the merge changes."""
        config = {
            **self.template,
            "peft_type": "LORA", "r": self.rank, "lora_alpha": self.rank,
            "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
            "lora_bias": False, "modules_to_save": None, "lora_dropout": 0.0,
            "task_type": None,  # the body only: task heads are not merged
            "inference_mode": True, "base_model_name_or_path": self.base,
            "fan_in_fan_out": any(self.transposed.get(t, False) and self.kinds.get(t) == "linear"
                                  for t in self.paths),
            "target_modules": sorted(set(self.paths.values())),
        }  # fmt: skip
        return {"adapter_config.json": orjson.dumps(config, option=orjson.OPT_INDENT_2)}
