"""A merge, declared: ``MergeSpec`` (method, inputs and weights, base, parameters, output form),
and the one call that carries it out, ``merge(repo, spec)``.

``merge`` resolves every ``NAME@REF``, checks that the inputs can be combined (one base for
every adapter, the same tensor names and shapes, the same vocabulary) before anything is stored,
streams the merge tensor by tensor into a new commit whose parents are the base and the inputs,
and records with it (its ``provenance``) the method, the spec, the seed, every input's commit and
manifest (content addresses, not names), the library versions, and the conflict report (an
object). The CLI's ``fmforge model merge`` options are this spec's fields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fmforge.access import targets
from fmforge.access.mediation import Need, mediated
from fmforge.errors import InvalidMerge
from fmforge.models.writer import CommitResult
from fmforge.repository import Repository

# Spec fields a method may read; any other one given is refused (``MergeMethod.check``).
PARAMETERS = {"lambda_": "lambda", "density": "density", "seed": "seed", "t": "t",
              "normalize": "normalize"}  # fmt: skip


class MergeInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field(
        min_length=1,
        description="NAME@REF of a full model or a PEFT adapter (merge_files: a path).",
    )
    weight: float = Field(1.0, description="The input's weight.")


class MergeSpec(BaseModel):
    """What to merge and how (frozen; validated when built)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True
    )

    method: str = Field(description="Merge method: " + "linear, task_arithmetic, ties, "
                        "dare_linear, dare_ties, fisher, slerp.")  # fmt: skip
    inputs: tuple[MergeInput, ...] = Field(min_length=1, description="The models merged.")
    base: str | None = Field(
        None,
        description="NAME@REF of the base the task vectors are taken from (default: the "
        "adapters' recorded base).",
    )
    lambda_: float = Field(1.0, alias="lambda", description="Scale of the merged task vector.")
    density: float = Field(
        1.0, gt=0, le=1, description="Share of each task vector kept (ties, dare_*)."
    )
    seed: int = Field(0, ge=0, description="Seed of DARE's random drop (recorded).")
    t: float = Field(0.5, ge=0, le=1, description="SLERP position: 0 the first, 1 the second.")
    normalize: bool | None = Field(
        None, description="Divide by the summed weights (default: the method's own)."
    )
    compute_dtype: Literal["float32", "float64"] = Field(
        "float64",
        description="Arithmetic precision; float32 reproduces mergekit bit for bit, float64 "
        "gives an input of weight 1 back exactly.",
    )
    output: Literal["full", "adapter"] = Field(
        "full", description="A full model, or a LoRA adapter re-factored by SVD."
    )
    rank: int | None = Field(
        None, ge=1, description="Rank of the adapter output (default: the inputs' ranks summed)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MergeSpec:
        if self.rank is not None and self.output != "adapter":
            raise ValueError("rank is the rank of an adapter output: give output='adapter'")
        from fmforge.merging.registry import get_method  # the registry imports the methods

        get_method(self.method)
        return self

    def given_parameters(self) -> set[str]:
        """The method parameters this spec sets to other than their defaults (by their public
        names): a spec recorded with every field re-validates."""
        fields = type(self).model_fields
        return {
            public
            for name, public in PARAMETERS.items()
            if name in self.model_fields_set and getattr(self, name) != fields[name].default
        }

    @classmethod
    def build(
        cls,
        method: str,
        inputs: Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        **parameters: Any,
    ) -> MergeSpec:
        """A spec from input REFs and their weights; parameters by field name (``lambda``
        accepted). Any problem is one ``InvalidMerge`` line."""
        if weights is not None and len(weights) != len(inputs):
            raise InvalidMerge(
                f"{len(weights)} weight(s) for {len(inputs)} input(s): give one per input"
            )
        items = [
            {"model": ref, **({} if weights is None else {"weight": weights[i]})}
            for i, ref in enumerate(inputs)
        ]
        return parse_spec({"method": method, "inputs": items, **parameters})


def parse_spec(data: dict[str, Any]) -> MergeSpec:
    """Validate ``data`` into a spec; a problem is one ``InvalidMerge`` line naming it."""
    try:
        return MergeSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        message = error["msg"].removeprefix("Value error, ")
        raise InvalidMerge(f"merge spec: {where}: {message}") from None
    except InvalidMerge:
        raise


@dataclass
class MergeResult:
    """A recorded merge: its commit, the conflict report, and for an adapter output the
    reconstruction error of its SVD re-factoring."""

    commit: CommitResult
    spec: MergeSpec
    report: dict[str, Any]
    report_object: str
    provenance: dict[str, Any]
    seconds: float
    reconstruction: dict[str, Any] | None = None
    not_merged: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.commit.model}@{self.commit.commit}"


def merge_needs(repo: Repository, args: Any) -> list[Need]:
    """What a merge touches: ``commit`` on the branch it writes (of the model named, else of
    each model the output may go to), ``read`` on each input and the base (as resolved)."""
    spec: MergeSpec = args["spec"]
    branch = args.get("branch") or f"merge/{spec.method}"
    if args.get("name"):
        outputs = [args["name"]]
    else:  # the base's model or the first input's, as the output turns out: both decided
        named = [spec.base] if spec.base else []
        outputs = list(dict.fromkeys(m.partition("@")[0] for m in [*named, spec.inputs[0].model]))
    out: list[Need] = [("commit", targets.branch_resource(o, branch)) for o in outputs]
    return out + merge_reads(repo, args)


def merge_reads(repo: Repository, args: Any) -> list[Need]:
    """``read`` on each input and the base of ``args["spec"]``."""
    spec: MergeSpec = args["spec"]
    sources = [i.model for i in spec.inputs] + ([spec.base] if spec.base else [])
    return [("read", targets.model_resource(repo, s)) for s in sources]


@mediated("commit", merge_needs)
def merge(
    repo: Repository,
    spec: MergeSpec,
    *,
    name: str | None = None,
    branch: str | None = None,
    message: str | None = None,
    chunk_bytes: int | None = None,
) -> MergeResult:
    """Carry out ``spec`` and commit the result to model ``name`` (default: the base's model
    for a full output, the first adapter's for an adapter output) on ``branch`` (default
    ``merge/<method>``; an existing branch's head becomes the first parent, as in git), with
    the base and the inputs as parents. ``chunk_bytes``: bytes of rows read per input and batch
    (memory against calls; the result does not depend on it)."""
    from fmforge.merging.planning import run_merge

    started = time.perf_counter()
    result = run_merge(
        repo, spec, name=name, branch=branch, message=message, chunk_bytes=chunk_bytes
    )
    result.seconds = time.perf_counter() - started
    return result
