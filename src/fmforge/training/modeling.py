"""Models for training and inference: built from a checked-out base with ``transformers``,
adapted with ``peft``, written back as files the registry commits.

Classification uses the architecture's ``...ForSequenceClassification`` (for MiniLM, a BERT body
and a linear head on the pooled first token); the newly initialised head (or one of another
size than the classes, re-initialised), and the pooler when the body has one (sentence encoders
never trained it), are trained in full beside the LoRA factors (PEFT's ``modules_to_save``,
stored with the adapter) or the full body. ``--method sparse`` trains the new head in full and
the pooler like the body, under the mask. A result directory holds the
weights (``adapter_model.safetensors`` and ``adapter_config.json`` for an adapter, whose
``base_model_name_or_path`` is the registered ``NAME@COMMIT``; ``model.safetensors``, config
and tokenizer for a full model) and ``fmforge_task.json`` (task, class names, text column and
length), so ``evaluate`` and users can load it back:

    base = AutoModelForSequenceClassification.from_pretrained(open_model("minilm"), num_labels=2)
    model = PeftModel.from_pretrained(base, open_model("minilm-youtube-lora"))
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmforge.errors import InvalidSpec
from fmforge.training.data import TrainingData
from fmforge.training.spec import FinetuneSpec

TASK_FILE = "fmforge_task.json"
MASK_FILE = "trainable_mask.safetensors"
MASK_PREFIX = "mask/"


@dataclass
class Job:
    """A finetune's resolved inputs: the spec, the base commit checked out, the rows."""

    spec: FinetuneSpec
    base_model: str
    base_commit: str
    base_dir: Path
    data: TrainingData
    tokenizer: Any = field(repr=False)
    max_length: int = 128  # the spec's, within what the model's positions allow

    @property
    def base(self) -> str:
        return f"{self.base_model}@{self.base_commit}"

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self.data.classes


@contextmanager
def quiet() -> Iterator[None]:
    """transformers' and PEFT's advice (newly initialised heads, ...) stays out of the output;
    what goes wrong still raises."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(before)


def load_tokenizer(directory: Path, task: str) -> Any:
    import transformers

    try:
        with quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(directory)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidSpec(f"the base model has no usable tokenizer: {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise InvalidSpec("the base model's tokenizer has no pad, eos or unk token")
        tokenizer.pad_token = fallback
    return tokenizer


def task_class(task: str) -> Any:
    import transformers

    if task == "classification":
        return transformers.AutoModelForSequenceClassification
    return transformers.AutoModelForCausalLM


def build_model(job: Job) -> tuple[Any, tuple[str, ...]]:
    """The model to train, from the base (the head's initialisation seeded), and the names of
    its head modules (trained in full by every method)."""
    spec = job.spec
    torch.manual_seed(spec.seed)
    kwargs: dict[str, Any] = {}
    if spec.task == "classification":
        classes = job.classes or ()
        kwargs = {
            "num_labels": len(classes),
            "id2label": dict(enumerate(classes)),
            "label2id": {name: i for i, name in enumerate(classes)},
        }
    try:
        with quiet():
            model, info = task_class(spec.task).from_pretrained(
                job.base_dir, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidSpec(
            f"--base {spec.base}: transformers cannot load it for {spec.task}: {_first_line(exc)}"
        ) from None
    model.config.pad_token_id = model.config.pad_token_id or job.tokenizer.pad_token_id
    new = [*info.get("missing_keys", []), *(k for k, *_ in info.get("mismatched_keys", []))]
    head = _head_modules(model, new, pooler=spec.method != "sparse") if job.classes else ()
    if spec.method == "lora":
        model = _lora(model, spec, head)
    else:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    return model, head


def _head_modules(model: Any, missing: list[str], *, pooler: bool) -> tuple[str, ...]:
    """Top-level modules the checkpoint did not initialise (a new head, or a head of another
    size), and the pooler unless ``pooler`` is off (FishMask's mask covers it like the body)."""
    names = {key.split(".")[0] for key in missing}
    prefix = getattr(model, "base_model_prefix", "")
    body = getattr(model, prefix, None) if prefix else None
    names.discard(prefix)  # a body the checkpoint lacks is a broken base, not a head
    if pooler and body is not None and getattr(body, "pooler", None) is not None:
        names.add("pooler")
    return tuple(sorted(names))


def _lora(model: Any, spec: FinetuneSpec, head: tuple[str, ...]) -> Any:
    import peft

    task_type = peft.TaskType.SEQ_CLS if spec.task == "classification" else peft.TaskType.CAUSAL_LM
    config = peft.LoraConfig(
        task_type=task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.targets) if spec.targets else None,
        modules_to_save=list(head) or None,
    )  # fmt: skip
    try:
        with quiet():
            return peft.get_peft_model(model, config)
    except ValueError as exc:
        raise InvalidSpec(f"--targets: {_first_line(exc)}") from None


def lora_targets(model: Any) -> list[str]:
    """The module names LoRA adapts (resolved from PEFT's defaults when none were given)."""
    config = getattr(model, "peft_config", {}).get("default")
    targets = getattr(config, "target_modules", None) or []
    return sorted(targets) if not isinstance(targets, str) else [targets]


def unwrap(model: Any) -> Any:
    """The model inside a ``DistributedDataParallel`` wrapper."""
    return getattr(model, "module", model)


def save_model(
    model: Any, job: Job, directory: Path, masks: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Write what a commit of this model holds: weights, configs, the task file (and the
    trainable mask of a sparse finetune)."""
    model = unwrap(model)
    directory.mkdir(parents=True, exist_ok=True)
    spec = job.spec
    with quiet():
        model.save_pretrained(directory, safe_serialization=True)
        if spec.method != "lora":
            _save_tokenizer(job, directory)
    if spec.method == "lora":
        config_path = directory / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = job.base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (directory / "README.md").unlink(missing_ok=True)  # PEFT's model card template
    task = {
        "task": spec.task, "classes": list(job.classes) if job.classes else None,
        "text_column": spec.text_column, "label_column": spec.label_column,
        "max_length": job.max_length, "base": job.base, "method": spec.method,
    }  # fmt: skip
    (directory / TASK_FILE).write_text(json.dumps(task, indent=2) + "\n")
    if masks:
        from safetensors.torch import save_file

        save_file(
            {MASK_PREFIX + name: mask.contiguous() for name, mask in sorted(masks.items())},
            str(directory / MASK_FILE),
        )


def _save_tokenizer(job: Job, directory: Path) -> None:
    """The tokenizer's files, each the base's own file where the base has one of that name
    (the tokenizer did not change: the same bytes cost nothing to commit), else as written."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fmforge-tokenizer-") as tmp:
        written = Path(tmp)
        job.tokenizer.save_pretrained(written)
        for path in sorted(written.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(written)
            source = job.base_dir / relative
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source if source.is_file() else path, target)


def weights_file(directory: Path) -> Path:
    """The weights file a saved model directory holds."""
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (directory / name).is_file():
            return directory / name
    raise InvalidSpec(f"{directory}: no adapter_model.safetensors or model.safetensors")


def load_weights(model: Any, job: Job, directory: Path) -> None:
    """Put the weights saved in ``directory`` (by ``save_model``) into ``model``."""
    from safetensors.torch import load_file

    model = unwrap(model)
    state = load_file(str(weights_file(directory)))
    if job.spec.method == "lora":
        import peft

        result = peft.set_peft_model_state_dict(model, state)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise InvalidSpec(f"checkpoint {directory.name} holds unknown tensors: {unexpected[0]}")
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_names(model)
    if unexpected or [k for k in missing if k not in tied]:
        first = (unexpected or [k for k in missing if k not in tied])[0]
        raise InvalidSpec(f"checkpoint {directory.name} does not fit the model: {first}")


def _tied_names(model: Any) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        return set(keys)
    return set(keys)


def load_for_inference(
    directory: Path, task_info: Mapping[str, Any], base_dir: Path | None
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a committed result: a full model directory, or an
    adapter directory on ``base_dir``."""
    task = str(task_info["task"])
    classes = task_info.get("classes")
    kwargs: dict[str, Any] = {}
    if task == "classification" and classes:
        kwargs = {"num_labels": len(classes)}
    source = base_dir if base_dir is not None else directory
    tokenizer = load_tokenizer(source, task)
    try:
        with quiet():
            model = task_class(task).from_pretrained(source, **kwargs)
            if base_dir is not None:
                import peft

                model = peft.PeftModel.from_pretrained(model, directory)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InvalidSpec(f"cannot load the model for {task}: {_first_line(exc)}") from None
    model.eval()
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]


# ---- tokens ----------------------------------------------------------------------------------


def encode(tokenizer: Any, texts: tuple[str, ...] | list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length`` (no padding yet)."""
    if not texts:
        return []
    with quiet():
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def collate(tokenizer: Any, rows: list[list[int]], device: Any = "cpu") -> dict[str, torch.Tensor]:
    """One padded batch (right padding): ``input_ids`` and ``attention_mask``."""
    width = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def token_losses(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per row: (sum of next-token negative log-likelihoods, tokens predicted), shape (rows, 2)."""
    targets = batch["input_ids"][:, 1:]
    mask = batch["attention_mask"][:, 1:].to(logits.dtype)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    return torch.stack([nll.sum(dim=1), mask.sum(dim=1)], dim=1)
