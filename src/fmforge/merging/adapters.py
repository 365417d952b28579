"""PEFT LoRA adapters as exact updates of their base's tensors (never factor by factor).

An adapter holds, per adapted module, ``lora_A`` ``[r, in]`` and ``lora_B`` ``[out, r]``; its
update of the module's weight is ``ΔW = s·B·A`` with ``s = alpha/r`` (``alpha/sqrt(r)`` with
rsLoRA; ``alpha`` from ``alpha_pattern`` where a pattern matches the module, as PEFT resolves
it). Embedding modules hold ``lora_embedding_A`` ``[r, vocab]`` and ``lora_embedding_B``
``[dim, r]`` and update by ``(B·A)ᵀ``, as do ``fan_in_fan_out`` layers (GPT-2's Conv1D).
DoRA (``use_dora``) rescales each output row: ``W' = m · (W + ΔW) / ‖W + ΔW‖`` (row norms, PEFT's
``lora_magnitude_vector``), so its update is ``W' - W``, computed from the base's rows. A
``lora_bias`` adds ``s·b`` to the module's bias. Rows of every update are independent, so the
engine computes them a batch of rows at a time.

Combining adapters factor by factor (PEFT's ``linear`` combination mixes the A's and the B's
separately) adds cross terms ``B₁·A₂`` (huggingface/peft#3004): merges here always combine the
updates themselves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.sources import CommitTensors
from fmforge.models import CommitReader
from fmforge.tensors.codec import TensorSpec

_PREFIX = "base_model.model."
_SUFFIXES = {
    ".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_B.bias": "bias",
    ".lora_embedding_A": "embedding_A", ".lora_embedding_B": "embedding_B",
    ".lora_magnitude_vector": "magnitude", ".lora_magnitude_vector.weight": "magnitude",
}  # fmt: skip


@dataclass
class LoraModule:
    """One adapted module: its tensors in the adapter and how they update the base."""

    path: str  # module path as PEFT names it (prefix removed), e.g. bert.encoder...query
    parts: dict[str, str] = field(default_factory=dict)  # role -> tensor name in the adapter
    scale: float = 1.0
    kind: str = "linear"  # linear | embedding
    transposed: bool = False  # ΔW = (B·A)ᵀ: embeddings and fan_in_fan_out layers
    target: str = ""  # the base tensor it updates (set when matched)


@dataclass
class LoraUpdate:
    """Rows of ``s·B·A`` (or its DoRA form) for one base tensor, computed on demand."""

    module: LoraModule
    source: CommitTensors
    dtype: torch.dtype
    _a: torch.Tensor | None = None
    _b: torch.Tensor | None = None
    _m: torch.Tensor | None = None

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._a is None or self._b is None:
            roles = self.module.parts
            a_name = roles.get("A") or roles["embedding_A"]
            b_name = roles.get("B") or roles["embedding_B"]
            self._a = self.source.whole(a_name).to(self.dtype)
            self._b = self.source.whole(b_name).to(self.dtype)
            if "magnitude" in roles:
                self._m = self.source.whole(roles["magnitude"]).reshape(-1).to(self.dtype)
        return self._a, self._b

    def release(self) -> None:
        self._a = self._b = self._m = None
        for name in self.module.parts.values():
            self.source.release(name)

    def rows(self, start: int, stop: int, base_rows: torch.Tensor | None) -> torch.Tensor:
        a, b = self._load()
        if self.module.transposed:
            delta = product(a[:, start:stop].T, b.T) * self.module.scale
        else:
            delta = product(b[start:stop], a) * self.module.scale
        if self._m is None:
            return delta
        assert base_rows is not None
        combined = base_rows + delta
        norm = torch.linalg.norm(combined, dim=1)
        factor = (self._m[start:stop] / norm).reshape(-1, 1)
        updated: torch.Tensor = factor * combined - base_rows
        return updated


def product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left @ right`` for a small inner dimension (a LoRA rank), summed term by term in
    order: every entry is computed the same way whatever rows are asked, so a merge streamed a
    batch of rows at a time gives the very bits of the whole update (a BLAS matmul's blocking,
    and so its rounding, depends on the shapes)."""
    out = torch.zeros((left.shape[0], right.shape[1]), dtype=left.dtype)
    for k in range(left.shape[1]):
        out += left[:, k : k + 1] * right[k : k + 1]
    return out


@dataclass
class BiasUpdate:
    """``s·b`` of a ``lora_bias`` on the module's bias."""

    name: str
    scale: float
    source: CommitTensors
    dtype: torch.dtype

    def release(self) -> None:
        self.source.release(self.name)

    def rows(self, start: int, stop: int, base_rows: torch.Tensor | None) -> torch.Tensor:
        return self.source.whole(self.name)[start:stop].to(self.dtype) * self.scale


@dataclass
class Adapter:
    """A committed PEFT LoRA adapter, matched against its base's tensor names."""

    label: str
    config: dict[str, Any]
    modules: dict[str, LoraModule]  # by base tensor name
    biases: dict[str, tuple[str, float]]  # base bias name -> (adapter tensor, scale)
    replaced: dict[str, str]  # base tensor name -> adapter tensor (modules_to_save)
    unmatched: list[str]  # adapter tensors no base tensor corresponds to (task heads)


def adapter_config(reader: CommitReader, label: str) -> dict[str, Any]:
    """The commit's ``adapter_config.json``, read from its blob."""
    for entry in reader.manifest["files"]:
        if entry["kind"] == "blob" and entry["path"].rsplit("/", 1)[-1] == "adapter_config.json":
            parsed = orjson.loads(reader.repo.objects.get(entry["object"]))
            if isinstance(parsed, dict):
                return parsed
    raise InvalidMerge(f"{label}: an adapter commit without its adapter_config.json")


def read_adapter(
    source: CommitTensors, config: dict[str, Any], base: dict[str, TensorSpec]
) -> Adapter:
    """Group the adapter's tensors by module and match each module to a base tensor."""
    label = source.label
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise InvalidMerge(f"{label} is a {peft_type} adapter: only LoRA adapters are merged")
    modules: dict[str, LoraModule] = {}
    others: list[str] = []
    for name in source.specs():
        for suffix, role in _SUFFIXES.items():
            if name.endswith(suffix):
                path = name[: -len(suffix)].removeprefix(_PREFIX)
                modules.setdefault(path, LoraModule(path)).parts[role] = name
                break
        else:
            others.append(name)
    by_target: dict[str, LoraModule] = {}
    biases: dict[str, tuple[str, float]] = {}
    for module in modules.values():
        _configure(module, config, source, label)
        target = _match(module.path, "weight", base, label)
        module.target = target
        _check_shape(module, source.specs(), base[target], label)
        by_target[target] = module
        if "bias" in module.parts:
            bias = _match(module.path, "bias", base, label)
            biases[bias] = (module.parts["bias"], module.scale)
    replaced: dict[str, str] = {}
    unmatched: list[str] = []
    for name in others:
        found = base_name(name.removeprefix(_PREFIX), base)
        if found is None:
            unmatched.append(name)
            continue
        target = found
        if base[target].shape != source.specs()[name].shape:
            raise InvalidMerge(
                f"{label}: {name} is {list(source.specs()[name].shape)}, the base's {target} "
                f"is {list(base[target].shape)}"
            )
        replaced[target] = name
    return Adapter(label, config, by_target, biases, replaced, unmatched)


def _configure(
    module: LoraModule, config: dict[str, Any], source: CommitTensors, label: str
) -> None:
    roles = module.parts
    if "A" in roles and "B" in roles:
        module.kind = "linear"
        module.transposed = bool(config.get("fan_in_fan_out"))
    elif "embedding_A" in roles and "embedding_B" in roles:
        module.kind, module.transposed = "embedding", True
    else:
        raise InvalidMerge(f"{label}: module {module.path} lacks its lora_A or lora_B")
    a_spec = source.specs()[roles.get("A") or roles["embedding_A"]]
    if len(a_spec.shape) != 2:
        raise InvalidMerge(f"{label}: module {module.path}: only 2-D LoRA layers are merged")
    rank = a_spec.shape[0]
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module.path):
            alpha = value
            break
    module.scale = float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
    dora = bool(config.get("use_dora"))
    if dora != ("magnitude" in roles):
        raise InvalidMerge(
            f"{label}: module {module.path}: use_dora is {dora} but the magnitude vector is "
            f"{'missing' if dora else 'present'}"
        )
    if dora and (module.transposed or "bias" in roles):
        raise InvalidMerge(
            f"{label}: module {module.path}: DoRA is merged on Linear layers without "
            "fan_in_fan_out or lora_bias only"
        )


def base_name(name: str, base: dict[str, TensorSpec]) -> str | None:
    """The base tensor ``name`` designates: itself, or with leading components dropped (a
    task model's ``bert.`` prefix over a bare encoder), or the one base name ending with it."""
    parts = name.split(".")
    for i in range(len(parts)):
        candidate = ".".join(parts[i:])
        if candidate in base:
            return candidate
    ending = [b for b in base if b.endswith("." + name)]
    return ending[0] if len(ending) == 1 else None


def _match(path: str, what: str, base: dict[str, TensorSpec], label: str) -> str:
    found = base_name(f"{path}.{what}", base)
    if found is None:
        raise InvalidMerge(f"{label}: module {path} has no {what} tensor in the base model")
    return found


def _check_shape(
    module: LoraModule, specs: dict[str, TensorSpec], target: TensorSpec, label: str
) -> None:
    roles = module.parts
    a = specs[roles.get("A") or roles["embedding_A"]].shape
    b = specs[roles.get("B") or roles["embedding_B"]].shape
    shape = (a[1], b[0]) if module.transposed else (b[0], a[1])
    if len(b) != 2 or b[1] != a[0] or shape != target.shape:
        hint = " (a different vocabulary?)" if module.kind == "embedding" else ""
        raise InvalidMerge(
            f"{label}: module {module.path} updates a {list(shape)} weight, the base's "
            f"{module.target} is {list(target.shape)}{hint}"
        )
