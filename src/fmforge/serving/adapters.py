"""LoRA adapters as the server holds them: described from the registry, loaded into tensors.

An adapter is a registry commit of a PEFT LoRA directory (``adapter_config.json`` plus
``adapter_model.safetensors``). ``describe`` reads only its manifest and config and computes
its **content hash**: blake3 over the raw hashes of its tensors and the config fields that
change what they compute (alpha, rank patterns, rsLoRA). Two commits of the same weights share
it, and every cache (device slot, host memory, local disk) is keyed by it, so moving a branch
to another commit can never serve stale weights.

``load`` turns the tensors into ``AdapterWeights``: per target module, ``A`` (rank x in) and
``B`` (out x rank) with PEFT's scaling folded into ``B``; and the classification head of a
sequence-classification adapter (PEFT's ``modules_to_save``: ``classifier`` or ``score``), and
the BERT pooler's dense layer when the adapter retrained it (as ``fmforge.training`` does).
Anything the batched layers cannot compute exactly (DoRA, LoRA on embeddings, fan-in-fan-out
layers, a trained bias, a whole replaced module) is refused by name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import orjson

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import AdapterIncompatible
from fmforge.models.checkout import CommitReader, LazyStateDict
from fmforge.repository import Repository

if TYPE_CHECKING:
    import torch

PEFT_PREFIX = "base_model.model."
HEAD_NAMES = ("classifier", "score")
"""Module names PEFT keeps whole for sequence classification (``modules_to_save``)."""


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """What the registry says about one adapter commit, without its weights."""

    model: str
    commit: str
    content: str  # the content hash every cache is keyed by
    base: str | None  # NAME@COMMIT of the model it adapts, as recorded
    config: dict[str, Any]
    tensor_bytes: int

    @property
    def name(self) -> str:
        return f"{self.model}@{self.commit}"

    @property
    def short(self) -> str:
        return f"{self.model}@{self.commit[:12]}"


@dataclass(slots=True)
class AdapterWeights:
    """An adapter's tensors, ready to copy into a slot; ``B`` carries the scaling."""

    content: str
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head: tuple[torch.Tensor, torch.Tensor | None] | None = None
    labels: list[str] = field(default_factory=list)
    pooler: tuple[torch.Tensor, torch.Tensor] | None = None  # a retrained BERT pooler's dense

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.modules.values()), default=0)

    @property
    def nbytes(self) -> int:
        total = sum(a.nbytes + b.nbytes for a, b in self.modules.values())
        if self.head is not None:
            total += self.head[0].nbytes + (self.head[1].nbytes if self.head[1] is not None else 0)
        if self.pooler is not None:
            total += self.pooler[0].nbytes + self.pooler[1].nbytes
        return total

    def to(self, device: Any, dtype: Any, *, pin: bool = False) -> AdapterWeights:
        """A copy on ``device`` in ``dtype``, every tensor a view of one buffer (pinned when
        ``pin``): one allocation per adapter, so memory is the tensors' bytes and a copy to
        the GPU is one transfer."""
        import torch

        parts: list[torch.Tensor] = [t for pair in self.modules.values() for t in pair]
        if self.head is not None:
            parts += [t for t in self.head if t is not None]
        if self.pooler is not None:
            parts += list(self.pooler)
        total = sum(t.numel() for t in parts)
        buffer = torch.empty(total, dtype=dtype, device=device, pin_memory=pin)
        views: list[torch.Tensor] = []
        offset = 0
        for t in parts:
            view = buffer[offset : offset + t.numel()].view(t.shape)
            view.copy_(t)
            views.append(view)
            offset += t.numel()
        it = iter(views)
        modules = {m: (next(it), next(it)) for m in self.modules}
        head = None
        if self.head is not None:
            head = (next(it), next(it) if self.head[1] is not None else None)
        pooler = (next(it), next(it)) if self.pooler is not None else None
        return AdapterWeights(self.content, modules, head, list(self.labels), pooler)


def _manifest_config(reader: CommitReader) -> dict[str, Any] | None:
    """``adapter_config.json``, with ``id2label`` from a ``config.json`` beside it (where a
    classification adapter keeps its label names) when it has none, else from the class names
    of ``fmforge_task.json`` (where ``fmforge.training`` records them)."""
    blobs = {
        Path(e["path"]).name: e["object"] for e in reader.manifest["files"] if e["kind"] == "blob"
    }
    if "adapter_config.json" not in blobs:
        return None
    parsed = orjson.loads(reader.repo.objects.get(blobs["adapter_config.json"]))
    if not isinstance(parsed, dict):
        return None
    if "id2label" not in parsed and "config.json" in blobs:
        extra = _json_blob(reader, blobs["config.json"])
        if isinstance(extra, dict) and isinstance(extra.get("id2label"), dict):
            parsed["id2label"] = extra["id2label"]
    if "id2label" not in parsed and "fmforge_task.json" in blobs:
        task = _json_blob(reader, blobs["fmforge_task.json"])
        classes = task.get("classes") if isinstance(task, dict) else None
        if isinstance(classes, list):
            parsed["id2label"] = {str(i): str(name) for i, name in enumerate(classes)}
    return parsed


def _json_blob(reader: CommitReader, digest: str) -> Any:
    try:
        return orjson.loads(reader.repo.objects.get(digest))
    except orjson.JSONDecodeError:
        return None


def _commit(repo: Repository, args: Any) -> str:
    return targets.model_resource(repo, f"{args['model']}@{args['commit']}")


def _spec(repo: Repository, args: Any) -> str:
    spec: AdapterSpec = args["spec"]
    return targets.model_resource(repo, f"{spec.model}@{spec.commit}")


@mediated("read_meta", _commit)
def describe(repo: Repository, model: str, commit: str) -> AdapterSpec:
    """The adapter at ``model@commit``, from its manifest and config only."""
    reader = CommitReader(repo, f"{model}@{commit}")
    label = f"{model}@{commit[:12]}"
    config = _manifest_config(reader)
    if config is None:
        raise AdapterIncompatible(
            label, "is not a PEFT adapter (its commit has no adapter_config.json)"
        )
    check_config(label, config)
    listed = list(reader.tensors())
    tensors = sorted((name, raw) for name, raw, _spec in listed)
    nbytes = sum(spec.nbytes for _name, _raw, spec in listed)
    return AdapterSpec(
        model, reader.commit, content_hash(tensors, config), reader.info.base, config, nbytes
    )


def check_config(label: str, config: Mapping[str, Any]) -> None:
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise AdapterIncompatible(label, f"is a {kind or 'non-PEFT'} adapter; only LoRA is served")
    if config.get("use_dora"):
        raise AdapterIncompatible(
            label, "is a DoRA adapter; merge it or serve it unmerged elsewhere"
        )
    if config.get("fan_in_fan_out"):
        raise AdapterIncompatible(label, "uses fan_in_fan_out (Conv1D layers), which is not served")
    if config.get("bias", "none") not in ("none", None):
        raise AdapterIncompatible(label, f"trains biases (bias={config['bias']!r}), not served")


def content_hash(tensors: Iterable[tuple[str, str]], config: Mapping[str, Any]) -> str:
    """blake3 of the (tensor name, raw hash) pairs and the config fields that set scaling."""
    relevant = {
        k: config.get(k) for k in ("lora_alpha", "r", "use_rslora", "rank_pattern", "alpha_pattern")
    }
    text = json.dumps(
        {"tensors": sorted(tensors), "config": relevant}, sort_keys=True, separators=(",", ":")
    )
    return blake3.blake3(text.encode()).hexdigest()


@mediated("use", _spec)
def load(
    repo: Repository, spec: AdapterSpec, modules: Mapping[str, tuple[int, int]]
) -> AdapterWeights:
    """The weights of ``spec``, each tensor hash-checked, mapped onto the served ``modules``
    (module path -> (in, out) features)."""
    with LazyStateDict(CommitReader(repo, spec.name), None, "pt") as state:
        tensors = {name: state[name] for name in state}
    return parse(spec.short, spec.content, tensors, spec.config, modules)


def module_path(path: str, known: Mapping[str, Any] | set[str]) -> str | None:
    """``path`` as a module of the served model: PEFT's prefix dropped, then leading
    segments dropped until it names one (``bert.encoder...`` on a bare ``BertModel``)."""
    parts = path.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in known:
            return candidate
    return None


def parse(
    label: str,
    content: str,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    modules: Mapping[str, tuple[int, int]],
) -> AdapterWeights:
    """PEFT's tensor names and config -> ``AdapterWeights`` over the served ``modules``."""
    lora: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    pooler: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(PEFT_PREFIX).replace(".modules_to_save.default", "")
        name = name.replace(".modules_to_save", "")
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.default)?\.weight", name)
        if match:
            lora.setdefault(match[1], {})[match[2]] = tensor
            continue
        if "lora_embedding" in name or "lora_magnitude" in name:
            raise AdapterIncompatible(label, f"tensor {key!r} is not a served kind of LoRA")
        owner, _, param = name.rpartition(".")
        if owner.split(".")[-1] in HEAD_NAMES and param in ("weight", "bias"):
            head[param] = tensor
            continue
        if owner.endswith("pooler.dense") and param in ("weight", "bias"):
            pooler[param] = tensor  # fmforge.training retrains the pooler with the head
            continue
        raise AdapterIncompatible(
            label, f"tensor {key!r} replaces part of the model (modules_to_save): merge it instead"
        )
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path, pair in lora.items():
        target = module_path(path, modules)
        if target is None:
            raise AdapterIncompatible(
                label, f"adapts module {path!r}, which is not among the served LoRA targets"
            )
        if set(pair) != {"A", "B"}:
            raise AdapterIncompatible(label, f"module {path!r} lacks lora_A or lora_B")
        a, b = pair["A"], pair["B"]
        features_in, features_out = modules[target]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise AdapterIncompatible(label, f"module {path!r}: lora_A/lora_B shapes do not pair")
        if a.shape[1] != features_in or b.shape[0] != features_out:
            raise AdapterIncompatible(
                label,
                f"module {path!r} is {features_out}x{features_in} in the served base, the "
                f"adapter's is {b.shape[0]}x{a.shape[1]}: it adapts another base",
            )
        out[target] = (a.contiguous(), (b * scaling(config, path, a.shape[0])).contiguous())
    weights = AdapterWeights(content, out)
    if head:
        if "weight" not in head:
            raise AdapterIncompatible(label, "its classification head has no weight")
        weights.head = (head["weight"].contiguous(), head.get("bias"))
        weights.labels = labels_of(config, int(head["weight"].shape[0]))
    if pooler:
        if set(pooler) != {"weight", "bias"} or pooler["weight"].dim() != 2:
            raise AdapterIncompatible(label, "its pooler lacks a weight or a bias")
        weights.pooler = (pooler["weight"].contiguous(), pooler["bias"].contiguous())
    return weights


def scaling(config: Mapping[str, Any], module: str, rank: int) -> float:
    """PEFT's LoRA scaling of ``module``: alpha / r (alpha / sqrt(r) with rsLoRA), with the
    per-module patterns of ``alpha_pattern``."""
    alpha = float(config.get("lora_alpha") or 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = float(value)
            break
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def labels_of(config: Mapping[str, Any], count: int) -> list[str]:
    """Label names of a classification adapter (``id2label`` of its config, else
    ``LABEL_i``)."""
    found = config.get("id2label") or {}
    return [str(found.get(str(i), found.get(i, f"LABEL_{i}"))) for i in range(count)]


# ---- the disk tier: one safetensors file per content hash ------------------------------------


def save_file(path: Path, weights: AdapterWeights) -> int:
    """Write ``weights`` to ``path`` (atomically); returns the file's size."""
    from safetensors.torch import save_file as write

    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in weights.modules.items():
        tensors[f"A::{module}"] = a.detach().cpu().contiguous()
        tensors[f"B::{module}"] = b.detach().cpu().contiguous()
    if weights.head is not None:
        tensors["head::weight"] = weights.head[0].detach().cpu().contiguous()
        if weights.head[1] is not None:
            tensors["head::bias"] = weights.head[1].detach().cpu().contiguous()
    if weights.pooler is not None:
        tensors["pooler::weight"] = weights.pooler[0].detach().cpu().contiguous()
        tensors["pooler::bias"] = weights.pooler[1].detach().cpu().contiguous()
    tmp = path.with_name(f".{path.name}.tmp")
    write(
        tensors,
        str(tmp),
        metadata={"content": weights.content, "labels": json.dumps(weights.labels)},
    )
    tmp.replace(path)
    return path.stat().st_size


def load_file(path: Path) -> AdapterWeights:
    from safetensors import safe_open

    modules: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    pooler: dict[str, torch.Tensor] = {}
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            kind, _, module = key.partition("::")
            if kind == "head":
                head[module] = handle.get_tensor(key)
            elif kind == "pooler":
                pooler[module] = handle.get_tensor(key)
            else:
                modules.setdefault(module, {})[kind] = handle.get_tensor(key)
    weights = AdapterWeights(
        meta.get("content", ""), {m: (p["A"], p["B"]) for m, p in modules.items()}
    )
    if head:
        weights.head = (head["weight"], head.get("bias"))
        weights.labels = json.loads(meta.get("labels", "[]"))
    if pooler:
        weights.pooler = (pooler["weight"], pooler["bias"])
    return weights
