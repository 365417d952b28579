"""The diagonal Fisher information of a model commit on a dataset version, stored and recorded.

    result = compute_fisher(repo, "minilm@main", "youtube@v2", split="train",
                            task="classification", examples=256)
    fisher = load_fisher(repo, "minilm@main")      # {tensor name: float32 tensor}, the newest

``F_i = 1/N sum_n (d log p(y_n | x_n) / d theta_i)^2`` over ``N`` examples, one example at a
time (per-example squared gradients, not squared batch gradients):

- ``empirical`` (default): ``y_n`` is the example's label; where the data has the label
  model's ``weak_label_proba``, its gradient is that of ``sum_c q_nc log p(c | x_n)``, the
  training loss's (a gold label is the one-hot case);
- ``true``: the expectation under the model's own predictive distribution, computed exactly
  for classification (``sum_c p(c | x_n) (d log p(c | x_n))^2``, one backward pass per class)
  and with one seeded sample of next tokens for causal-lm.

For causal-lm, ``log p(x_n)`` is the sum over the example's predicted tokens.

Names: the tensor names of the dense model the commit is. A full model's are its own; an
adapter's are its base's (the adapter merged into its base), its trained head under the task
model's names; a base without a head (``task`` given) gets a head initialised from ``seed``
exactly as ``finetune`` initialises one, and its Fisher leaves that random head out.

Deterministic: examples drawn by a permutation seeded by ``seed``, each alone (no padding), in
eval mode, on ``threads`` torch threads (default one) with deterministic algorithms. The
result is one safetensors object (float32; metadata: kind, examples, seed, model, data)
recorded as ``FisherComputed`` on ``model/<name>`` (its object in the event's refs), which
``repo.view(ModelFishers)`` answers from: what FishMask (``--method sparse``) and
Fisher-weighted merging read, so neither needs the data again.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import FisherNotFound, InvalidSpec, ModelNotFound
from fmforge.models.checkout import CommitReader, open_model
from fmforge.models.events import FisherComputed
from fmforge.models.fishers import FisherRecord, ModelFishers
from fmforge.models.refs import STREAM_PREFIX, ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.training.spec import FinetuneSpec

KINDS = ("empirical", "true")
DEFAULT_EXAMPLES = 256
MAX_TRUE_CLASSES = 64  # the exact expectation costs one backward pass per class


@dataclass(frozen=True)
class FisherResult:
    model: str
    commit: str
    object: str
    dataset: str  # NAME@vN[:split]
    dataset_version: str
    examples: int
    task: str
    kind: str
    seed: int
    tensors: int
    seconds: float
    reused: bool = False  # found recorded already (FishMask), not computed

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "commit": self.commit, "object": self.object,
            "dataset": self.dataset, "dataset_version": self.dataset_version,
            "examples": self.examples, "task": self.task, "kind": self.kind, "seed": self.seed,
            "tensors": self.tensors, "seconds": round(self.seconds, 3), "reused": self.reused,
        }  # fmt: skip


# ---- the computation ------------------------------------------------------------------------


def diagonal_fisher(
    model: Any,
    encoded: Sequence[Sequence[int]],
    targets: np.ndarray[Any, Any] | None,
    names: Mapping[str, str],
    *,
    task: str,
    kind: str = "empirical",
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    device: Any = "cpu",
) -> tuple[dict[str, torch.Tensor], int]:
    """(name -> the diagonal Fisher of parameter ``p`` of ``model``, as ``names[p]``; the
    examples used). ``encoded``: token ids per row; ``targets``: (rows, classes) label
    distributions (classification, empirical). The model's train/eval mode is kept."""
    if kind not in KINDS:
        raise InvalidSpec(f"--kind {kind}: use empirical or true")
    rows = [i for i, ids in enumerate(encoded) if len(ids) >= (2 if task == "causal-lm" else 1)]
    generator = torch.Generator().manual_seed(seed)
    order = [rows[int(i)] for i in torch.randperm(len(rows), generator=generator)][:examples]
    if not order:
        raise InvalidSpec("no examples to compute the Fisher on")
    params = [(names[n], p) for n, p in model.named_parameters() if n in names]
    tensors = [p for _, p in params]
    wanted = [p.requires_grad for p in tensors]
    sums = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in tensors]
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        for p in tensors:
            p.requires_grad_(True)
        for index in order:
            ids = torch.tensor([list(encoded[index])], dtype=torch.long, device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            parts = _objectives(logits, ids, targets, index, task, kind, generator)
            for weight, objective in parts:
                grads = torch.autograd.grad(
                    objective, tensors, retain_graph=True, allow_unused=True
                )
                for total, grad in zip(sums, grads, strict=True):
                    if grad is not None:
                        total.addcmul_(grad.float(), grad.float(), value=weight)
    finally:
        for p, flag in zip(tensors, wanted, strict=True):
            p.requires_grad_(flag)
        if was_training:
            model.train()
    n = len(order)
    return {name: (s / n).cpu() for (name, _), s in zip(params, sums, strict=True)}, n


def _objectives(
    logits: torch.Tensor,
    ids: torch.Tensor,
    targets: np.ndarray[Any, Any] | None,
    index: int,
    task: str,
    kind: str,
    generator: torch.Generator,
) -> Iterable[tuple[float, torch.Tensor]]:
    """(weight, log-likelihood) pairs whose weighted squared gradients make one example's
    contribution."""
    if task == "causal-lm":
        logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        if kind == "empirical":
            tokens = ids[0, 1:]
        else:
            probs = logp.detach().exp().cpu()
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(ids.device)
        yield 1.0, logp.gather(-1, tokens.unsqueeze(-1)).sum()
        return
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    if kind == "empirical":
        assert targets is not None
        target = torch.from_numpy(np.asarray(targets[index], dtype=np.float32)).to(logp.device)
        yield 1.0, (target * logp).sum()
        return
    shares = logp.detach().exp().cpu().tolist()
    for c, share in enumerate(shares):
        if share > 0:
            yield float(share), logp[c]


def parameter_names(model: Any, stored: set[str], *, keep_others: bool) -> dict[str, str]:
    """parameter name -> the commit's tensor name for it: itself, or without the task model's
    prefix (``bert.``) when the commit stores the body bare. Parameters the commit lacks (a new
    head) are left out unless ``keep_others``."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for name, _ in model.named_parameters():
        if name in stored:
            out[name] = name
        elif prefix and name.startswith(prefix + ".") and name[len(prefix) + 1 :] in stored:
            out[name] = name[len(prefix) + 1 :]
        elif keep_others:
            out[name] = name
    return out


def stored_names(repo: Repository, target: str) -> set[str]:
    """The tensor names of commit ``target`` (NAME@COMMIT)."""
    return {name for name, _, _ in CommitReader(repo, target).tensors()}


# ---- compute, store, record -----------------------------------------------------------------


@mediated("use", targets.needs(("use", targets.model("model")), ("use", targets.dataset("data"))))
def compute_fisher(
    repo: Repository,
    model: str,
    data: str,
    *,
    split: str | None = None,
    examples: int = DEFAULT_EXAMPLES,
    task: str | None = None,
    kind: str = "empirical",
    seed: int = 0,
    text_column: str | None = None,
    label_column: str = "label",
    max_length: int | None = None,
    threads: int | None = 1,
) -> FisherResult:
    """The diagonal Fisher of commit ``model`` (NAME@REF) on ``data`` (DATASET@REF, its
    ``split`` or every row), stored and recorded as ``FisherComputed``; see the module
    docstring. Refused with ``InvalidSpec``, nothing recorded, when the inputs do not fit."""
    from fmforge.training.finetuning import determinism

    if kind not in KINDS:
        raise InvalidSpec(f"--kind {kind}: use empirical or true")
    if task is not None and task not in ("classification", "causal-lm"):
        raise InvalidSpec(f"--task {task}: use classification or causal-lm")
    if not isinstance(examples, int) or examples < 1:
        raise InvalidSpec(f"--examples {examples}: must be at least 1")
    started = time.perf_counter()
    spec = FinetuneSpec.parse({"base": model, "data": data, "method": "full", "seed": seed,
                               "threads": threads, "device": "cpu"})  # fmt: skip
    with determinism(spec):
        setup = _Setup.load(repo, model, data, split, task, kind, seed, text_column,
                            label_column, max_length)  # fmt: skip
        tensors, used = diagonal_fisher(
            setup.model, setup.encoded, setup.targets, setup.names, task=setup.task, kind=kind,
            examples=examples, seed=seed,
        )  # fmt: skip
    return store_fisher(
        repo, setup.name, setup.commit, tensors, dataset=setup.dataset,
        dataset_version=setup.dataset_version, examples=used, task=setup.task, kind=kind,
        seed=seed, started=started,
    )  # fmt: skip


def store_fisher(
    repo: Repository,
    name: str,
    commit: str,
    tensors: Mapping[str, torch.Tensor],
    *,
    dataset: str,
    dataset_version: str,
    examples: int,
    task: str,
    kind: str,
    seed: int,
    started: float,
) -> FisherResult:
    """Store ``tensors`` as one safetensors object and record ``FisherComputed``."""
    metadata = {"kind": kind, "examples": str(examples), "seed": str(seed), "task": task,
                "model": f"{name}@{commit}", "data": dataset}  # fmt: skip
    digest = repo.objects.put(safetensors_bytes(tensors, metadata))
    event = {
        "model": name, "commit": commit, "dataset": dataset, "dataset_version": dataset_version,
        "object": digest, "examples": examples, "task": task, "kind": kind, "seed": seed,
    }  # fmt: skip
    repo.record(STREAM_PREFIX + name, FisherComputed(event, refs=[digest]))  # type: ignore[arg-type]
    return FisherResult(
        name, commit, digest, dataset, dataset_version, examples, task, kind, seed,
        len(tensors), time.perf_counter() - started,
    )  # fmt: skip


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """``tensors`` (float32, in name order) as a safetensors file, byte for byte the same for
    the same input (the reference writer's metadata order is a hash map's)."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    parts, offset = [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        parts.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(parts)


def read_fisher(repo: Repository, record: FisherRecord | str) -> dict[str, torch.Tensor]:
    """The tensors of a recorded Fisher (a record, or its object's digest)."""
    from safetensors.torch import load

    digest = record if isinstance(record, str) else record.object
    return load(repo.objects.get(digest))


@mediated("read", targets.model("model"))
def load_fisher(repo: Repository, model: str) -> dict[str, torch.Tensor]:
    """The newest Fisher recorded for the commit ``model`` (NAME@REF) names: tensor name ->
    float32 tensor, with the model's tensor names. ``FisherNotFound`` when there is none."""
    name, ref = split_model_ref(model)
    commit = repo.view(ModelRefs).resolve(name, ref)
    record = repo.view(ModelFishers).fisher(commit)
    if record is None:
        raise FisherNotFound(
            f"no Fisher recorded for {name}@{commit[:12]} (compute one: fmforge fisher "
            f"{name}@{commit[:12]} --data DATASET@REF)"
        )
    return read_fisher(repo, record)


# ---- what compute_fisher loads --------------------------------------------------------------


@dataclass
class _Setup:
    name: str
    commit: str
    task: str
    model: Any
    encoded: list[list[int]]
    targets: np.ndarray[Any, Any] | None
    names: dict[str, str]
    dataset: str
    dataset_version: str

    @classmethod
    def load(
        cls, repo: Repository, target: str, data: str, split: str | None, task: str | None,
        kind: str, seed: int, text_column: str | None, label_column: str,
        max_length: int | None,
    ) -> _Setup:  # fmt: skip
        from fmforge.training.data import load_training_data
        from fmforge.training.evaluation import task_of
        from fmforge.training.finetuning import prepare
        from fmforge.training.modeling import build_model, encode, load_for_inference

        name, ref = split_model_ref(target)
        index = repo.view(ModelRefs)
        try:
            commit = index.resolve(name, ref)
        except ModelNotFound:
            raise InvalidSpec(f"{target}: no registered model {name!r}") from None
        pinned = f"{name}@{commit}"
        directory = open_model(pinned, repo=repo)
        adapter = CommitReader(repo, pinned).manifest.get("adapter") is not None
        try:
            info: dict[str, Any] | None = task_of(directory, pinned)
        except InvalidSpec:
            if adapter or task is None:
                raise InvalidSpec(
                    f"{name}@{commit[:12]} has no task head: say --task classification or "
                    "causal-lm (a head is initialised from --seed, as finetune does)"
                ) from None
            info = None
        if info is not None and task is not None and task != info["task"]:
            raise InvalidSpec(f"{name}@{commit[:12]} is a {info['task']} model, not {task}")
        task = str(info["task"]) if info is not None else str(task)
        values: dict[str, Any] = {
            "base": pinned, "data": data, "task": task, "method": "full", "seed": seed,
            "train_split": split, "label_column": label_column, "soft_labels": True,
            "text_column": text_column or (info or {}).get("text_column") or "text",
        }  # fmt: skip
        if info is not None and info.get("classes"):
            values["labels"] = tuple(info["classes"])
        if max_length is not None:
            values["max_length"] = max_length
        elif info is not None and info.get("max_length"):
            values["max_length"] = int(info["max_length"])
        spec = _spec(values)
        if info is None:  # a base: built as finetune builds it, the new head left out
            job = _renamed(lambda: prepare(repo, spec), split)
            model, _ = build_model(job)
            names = parameter_names(model, stored_names(repo, pinned), keep_others=False)
            rows, tokenizer, length = job.data.train, job.tokenizer, job.max_length
            version = job.data.version
        else:
            training = _renamed(lambda: load_training_data(repo, spec), split)
            rows, version = training.train, training.version
            base_dir = None
            if adapter:
                base = index.commit(commit).base
                if not base:
                    raise InvalidSpec(f"{name}@{commit[:12]} is an adapter with no recorded base")
                base_dir = open_model(base, repo=repo)
                stored = stored_names(repo, base)
            else:
                stored = stored_names(repo, pinned)
            model, tokenizer = load_for_inference(directory, info, base_dir)
            if adapter:
                model = model.merge_and_unload()
            names = parameter_names(model, stored, keep_others=True)
            limit = getattr(model.config, "max_position_embeddings", None)
            length = min(spec.max_length, limit) if isinstance(limit, int) else spec.max_length
        encoded = encode(tokenizer, rows.texts, length)
        dataset = version.ref + (f":{split}" if split else "")
        targets = rows.targets if task == "classification" else None
        return cls(name, commit, task, model, encoded, targets, names, dataset, version.id)


def _spec(values: dict[str, Any]) -> FinetuneSpec:
    try:
        return FinetuneSpec.parse(values)
    except InvalidSpec as exc:
        raise InvalidSpec(str(exc).replace("finetune spec: ", "")) from None


def _renamed(call: Any, split: str | None) -> Any:
    """Run ``call``; a refusal naming ``--train-split`` names the data's split instead."""
    try:
        return call()
    except InvalidSpec as exc:
        text = str(exc).replace(f"--train-split {split}", f"--data ...:{split}")
        raise InvalidSpec(text.replace("--train-split", "--data ...:SPLIT")) from None


def describe(result: FisherResult) -> str:
    """One line for the CLI."""
    return (
        f"Fisher of {result.model}@{result.commit[:12]} on {result.dataset} "
        f"({result.examples} examples, {result.kind}, {result.tensors} tensors) stored as "
        f"{result.object[:12]} in {result.seconds:.1f} s"
    )


__all__ = [
    "DEFAULT_EXAMPLES",
    "KINDS",
    "FisherResult",
    "compute_fisher",
    "describe",
    "diagonal_fisher",
    "load_fisher",
    "read_fisher",
    "store_fisher",
]
