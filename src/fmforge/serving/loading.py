"""Building a replica's engine: the base model on its device, the LoRA slots, the caches.

The device is ``cuda`` when one is present (``auto``) and the same code runs on either; on a
GPU the host tier keeps adapters in pinned memory so a copy into a slot does not wait. The
LoRA targets are the modules the declared adapters adapt (or ``lora_targets``, or every linear
layer of the blocks); the number of device slots is the device budget divided by one slot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fmforge.errors import ConfigError
from fmforge.serving.adapters import AdapterSpec, AdapterWeights
from fmforge.serving.batching import LoRASlots, inject, lora_targets
from fmforge.serving.cache import AdapterCache, CacheEvent
from fmforge.serving.engine import Engine
from fmforge.serving.metrics import Metrics
from fmforge.serving.scheduler import Scheduler

if TYPE_CHECKING:
    from fmforge.serving.deployment import ServingConfig

DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}  # fmt: skip


@dataclass
class LoadedBase:
    model: Any
    tokenizer: Any
    kind: str  # causal | encoder
    device: torch.device
    dtype: torch.dtype
    context_len: int
    eos_ids: tuple[int, ...]
    hidden_size: int
    chat_template: bool


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_base(directory: Path, config: ServingConfig) -> LoadedBase:
    """The base model (a causal LM, else an encoder) and its tokenizer from ``directory``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    model_config = AutoConfig.from_pretrained(directory)
    causal = any(a.endswith("ForCausalLM") for a in (model_config.architectures or []))
    cls: Any = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(directory).to(device=device, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)  # type: ignore[no-untyped-call]
    context = int(getattr(model_config, "max_position_embeddings", 0) or 2048)
    eos: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        found = getattr(source, "eos_token_id", None)
        eos.update([found] if isinstance(found, int) else list(found or []))
    return LoadedBase(
        model, tokenizer, "causal" if causal else "encoder", device, dtype, context,
        tuple(sorted(eos)), int(model_config.hidden_size),
        bool(getattr(tokenizer, "chat_template", None)),
    )  # fmt: skip


def target_suffixes(specs: Sequence[AdapterSpec], given: Sequence[str] | None) -> list[str] | None:
    """Module-name suffixes to serve LoRA on: ``given``, else the declared adapters' targets
    (None: every linear layer of the blocks)."""
    if given:
        return list(given)
    found: set[str] = set()
    for spec in specs:
        targets = spec.config.get("target_modules")
        if isinstance(targets, str):
            found.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", targets))
        elif isinstance(targets, list):
            found.update(str(t) for t in targets)
    return sorted(found) or None


def _has_pooler(model: torch.nn.Module) -> bool:
    """A BERT-like pooler: ``pooler.dense`` of the hidden size, then tanh."""
    dense = getattr(getattr(model, "pooler", None), "dense", None)
    return isinstance(dense, torch.nn.Linear)


def build_engine(
    base: LoadedBase,
    config: ServingConfig,
    metrics: Metrics,
    declared: Sequence[AdapterSpec],
    *,
    fetch: Callable[[AdapterSpec], AdapterWeights],
    loader: Executor,
    on_event: Callable[[CacheEvent], None],
) -> tuple[AdapterCache, Engine]:
    targets = lora_targets(base.model, target_suffixes(declared, config.lora_targets))
    if not targets:
        raise ConfigError(
            f"no linear layer of the base matches the LoRA targets {config.lora_targets}"
        )
    head = (base.hidden_size, config.max_labels) if base.kind == "encoder" else None
    pooler = base.hidden_size if head is not None and _has_pooler(base.model) else None
    itemsize = torch.empty((), dtype=base.dtype).element_size()
    per_slot = LoRASlots.bytes_per_slot(targets, config.max_rank, itemsize, head, pooler)
    count = max(1, min(4096, config.device_cache_bytes // per_slot))
    slots = LoRASlots(
        targets, count, config.max_rank, device=base.device, dtype=base.dtype, head=head,
        pooler=pooler,
    )  # fmt: skip
    inject(base.model, slots)
    pin = base.device.type == "cuda"

    def prepare(weights: AdapterWeights) -> AdapterWeights:
        if weights.rank > config.max_rank:
            from fmforge.errors import AdapterIncompatible

            raise AdapterIncompatible(
                weights.content[:12],
                f"has rank {weights.rank}, over this deployment's --max-rank {config.max_rank}",
            )
        if weights.head is not None and weights.head[0].shape[0] > config.max_labels:
            from fmforge.errors import AdapterIncompatible

            raise AdapterIncompatible(
                weights.content[:12], f"has over {config.max_labels} labels (--max-labels)"
            )
        if weights.pooler is not None and (
            pooler is None or tuple(weights.pooler[0].shape) != (pooler, pooler)
        ):
            from fmforge.errors import AdapterIncompatible

            raise AdapterIncompatible(
                weights.content[:12],
                "retrains a pooler this base does not have (or of another size)",
            )
        return weights.to("cpu", base.dtype, pin=pin)

    cache = AdapterCache(
        slots,
        fetch=fetch,
        loader=loader,
        host_bytes=config.host_cache_bytes,
        disk_dir=Path(config.cache_dir) if config.cache_dir else None,
        disk_bytes=config.disk_cache_bytes,
        prepare=prepare,
        on_event=on_event,
    )
    scheduler = Scheduler(
        max_queued=config.max_queued, max_queued_per_adapter=config.max_queued_per_adapter
    )
    engine = Engine(
        base.model, base.tokenizer, kind=base.kind, slots=slots, cache=cache,
        scheduler=scheduler, metrics=metrics, device=base.device, max_batch=config.max_batch,
        cycle_time_s=config.cycle_time_s, context_len=base.context_len, eos_ids=base.eos_ids,
        threads=config.threads,
    )  # fmt: skip
    return cache, engine
