"""``FinetuneSpec``: every input of a finetune that changes its result, as one frozen model.

The CLI's options are derived from these fields (``fmforge.cli.specs``), the declarative spec
composes them later, and a run records the resolved spec (defaults filled in) as its config, so
``fmforge runs replay`` can run it again. Execution choices that do not change the weights
(how many processes, which run to resume, the run's name) are not part of it.

A spec that cannot be right is refused when it is built, in one line naming the option:
``FinetuneSpec.parse(values)`` turns pydantic's errors into ``InvalidSpec``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fmforge.errors import InvalidSpec
from fmforge.ledger.events import canonical_json

Task = Literal["classification", "causal-lm"]
Method = Literal["lora", "full", "sparse"]
Metric = Literal["accuracy", "macro_f1", "perplexity"]
Device = Literal["auto", "cpu", "cuda"]

DEFAULT_LR = {"lora": 5e-4, "full": 5e-5, "sparse": 1e-4}
DEFAULT_KEEP = 0.005
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "causal-lm": ("perplexity",),
}
LORA_ONLY = ("r", "alpha", "dropout", "targets")


def _positive(name: str) -> Any:
    return Field(gt=0, description=name)


class FinetuneSpec(BaseModel):
    """What to finetune, on what, how. Field descriptions are the CLI's help texts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(description="The registered model to start from (NAME@REF).")
    data: str = Field(description="The dataset version to train on (NAME@REF).")
    task: Task = Field("classification", description="classification or causal-lm.")
    method: Method = Field(
        "lora",
        description="lora (a PEFT adapter), full (every weight), or sparse (only the entries "
        "of a mask: --keep of them, chosen by gradient magnitude).",
    )
    text_column: str = Field("text", description="The column holding the text.")
    label_column: str = Field(
        "label", description="The gold label column (class names or indices; -1/null: none)."
    )
    labels: tuple[str, ...] | None = Field(
        None,
        description="Class names in order (default: those recorded by the label model or the "
        "import, else the gold column's values).",
    )
    soft_labels: bool = Field(
        True,
        description="Train on the label model's weak_label_proba (cross-entropy against the "
        "distribution) when the data has it; else on the gold labels of the train split.",
    )
    train_split: str | None = Field(
        "train", description="Rows whose split column has this value are trained on."
    )
    eval_split: str | None = Field(
        None, description="Gold rows evaluated during and after training (e.g. valid, dev)."
    )
    test_split: str | None = Field(None, description="Gold rows evaluated once, at the end.")
    metric: Metric | None = Field(
        None,
        description="The objective reported to a search (default: accuracy, or perplexity for "
        "causal-lm).",
    )
    r: Annotated[int, Field(ge=1, le=4096)] = Field(8, description="LoRA rank.")
    alpha: Annotated[int, Field(ge=1, le=65_536)] = Field(
        16, description="LoRA alpha (the update is scaled by alpha/r)."
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="LoRA dropout.")
    targets: tuple[str, ...] | None = Field(
        None,
        description="Modules LoRA adapts (default: PEFT's choice for the architecture, e.g. "
        "query,value for BERT).",
    )
    keep: float | None = Field(
        None,
        description="sparse: the share of entries trained, e.g. 0.5% or 0.005 (default 0.5%).",
        json_schema_extra={"cli_text": True},
    )
    epochs: Annotated[int, Field(ge=1, le=10_000)] = Field(1, description="Passes over the data.")
    lr: Annotated[float, Field(gt=0, lt=1)] = Field(
        None,  # type: ignore[assignment]  # filled in per method before validation
        description="Peak learning rate (default: 5e-4 lora, 5e-5 full, 1e-4 sparse).",
    )
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(16, description="Rows per step.")
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(0, description="Seed of init and order.")
    max_length: Annotated[int, Field(ge=4, le=1_000_000)] = Field(
        128, description="Tokens per row (longer rows are truncated)."
    )
    weight_decay: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="AdamW decay.")
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="Share of steps with a linear warm-up (then linear decay to 0)."
    )
    max_grad_norm: Annotated[float, Field(gt=0)] | None = Field(
        1.0, description="Clip gradients to this norm (none: no clipping)."
    )
    max_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Stop after this many steps (default: every epoch)."
    )
    eval_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Evaluate the eval split every N steps (default: each epoch's end)."
    )
    checkpoint_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Commit a checkpoint every N steps (default: each epoch's end)."
    )
    output: str | None = Field(
        None,
        description="Where the result is committed, NAME[@BRANCH] (default: lora, model "
        "BASE-DATA-lora; full and sparse, branch finetune/RUN of the base model).",
    )
    project: str = Field("finetune", min_length=1, description="The runs' project.")
    threads: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None, description="torch threads (default: torch's); recorded, as it changes the bits."
    )
    device: Device = Field("auto", description="auto, cpu or cuda.")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, values: Any) -> Any:
        if isinstance(values, dict):
            values = dict(values)
            method = values.get("method") or "lora"
            if values.get("lr") is None and method in DEFAULT_LR:
                values["lr"] = DEFAULT_LR[method]
            if method == "sparse" and values.get("keep") is None:
                values["keep"] = DEFAULT_KEEP
        return values

    @field_validator("keep", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a share (0.5% or 0.005)") from None
        if value is not None and not (math.isfinite(value) and 0 < value <= 1):
            raise ValueError(f"must be in (0, 100%], got {value}")
        return value

    @field_validator("labels", "targets", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else list(value)
        names = [part.strip() for item in items for part in str(item).split(",")]
        if not names or any(not n for n in names):
            raise ValueError("names are non-empty, separated by commas")
        if len(set(names)) != len(names):
            raise ValueError(f"a name is repeated: {', '.join(names)}")
        return tuple(names)

    @field_validator("base", "data", "text_column", "label_column")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneSpec:
        if self.method != "lora":
            for name in LORA_ONLY:  # a default value is harmless (a recorded spec has them all)
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(f"{option(name)} applies to --method lora only")
        if self.method != "sparse" and self.keep is not None:
            raise ValueError("--keep applies to --method sparse only")
        if self.method == "sparse" and self.weight_decay:
            raise ValueError("--weight-decay must be 0 with --method sparse (it would move the "
                             "entries the mask freezes)")  # fmt: skip
        if self.metric is not None and self.metric not in TASK_METRICS[self.task]:
            raise ValueError(
                f"--metric {self.metric} does not apply to {self.task} "
                f"(use {' or '.join(TASK_METRICS[self.task])})"
            )
        if self.task == "causal-lm" and self.labels is not None:
            raise ValueError("--labels applies to --task classification only")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("--labels needs at least two classes")
        return self

    # ---- derived --------------------------------------------------------------------------

    @classmethod
    def parse(cls, values: dict[str, Any]) -> FinetuneSpec:
        """Validate ``values``; a mistake is ``InvalidSpec`` naming the option, in one line."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InvalidSpec(describe(exc)) from None

    @property
    def objective(self) -> str:
        """The metric a search optimises (``metric``, or the task's first)."""
        return self.metric or TASK_METRICS[self.task][0]

    def replace(self, **changes: Any) -> FinetuneSpec:
        """A copy with ``changes``, validated again."""
        return FinetuneSpec.parse({**self.model_dump(exclude_unset=True), **changes})

    def digest(self) -> str:
        """blake3 of the resolved spec's canonical JSON: runs of the same spec share it."""
        return blake3.blake3(canonical_json(self.model_dump(mode="json"), "spec")).hexdigest()


def option(field: str) -> str:
    """The CLI option of a spec field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def describe(exc: ValidationError) -> str:
    """pydantic's first error as one line naming the option (``--keep: must be in ...``)."""
    error = exc.errors()[0]
    where = error.get("loc") or ()
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden" and where:
        return f"finetune spec: unknown option {option(str(where[0]))}"
    if error.get("type") == "literal_error" and where:
        return f"finetune spec: {option(str(where[0]))}: {message} (got {error.get('input')!r})"
    if not where:
        return f"finetune spec: {message}"
    return f"finetune spec: {option(str(where[0]))}: {message}"
