"""From a spec to a plan: the inputs resolved and checked, one job per tensor, and the commit.

Every check that can refuse a merge runs here, before anything is stored: the method's own
(inputs, base, parameters), one base for every adapter, the same tensor names and shapes in every
full input (a different vocabulary is named as such), adapter modules that match the base, and
integer tensors identical everywhere.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fmforge.access.mediation import mediated
from fmforge.errors import InvalidMerge
from fmforge.ledger.events import canonical_json
from fmforge.merging.adapters import (
    Adapter,
    BiasUpdate,
    LoraUpdate,
    adapter_config,
    base_name,
    read_adapter,
)
from fmforge.merging.base import MergeResult, MergeSpec, merge_reads
from fmforge.merging.conflicts import REPORT_FORMAT, summarize
from fmforge.merging.method import MergeMethod
from fmforge.merging.methods.fisher import FISHER, fisher_of
from fmforge.merging.refactor import AdapterOutput
from fmforge.merging.registry import get_method
from fmforge.merging.sources import (
    FLOATS,
    CommitTensors,
    SafetensorsBytes,
    SafetensorsFile,
    TensorSource,
)
from fmforge.merging.stream import Engine, Job, Part, Plan
from fmforge.models import CommitReader, ModelRefs
from fmforge.models.tensorcommit import KnownTensor, commit_tensors
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_INDEX_FILES = (".safetensors.index.json", ".bin.index.json")


@dataclass
class Resolved:
    """One input or the base, resolved to a commit."""

    label: str  # as given
    reader: CommitReader
    source: CommitTensors
    adapter: Adapter | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # a full task model over a bare base: base tensor name -> its own name (``bert.`` prefix)
    names: dict[str, str] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)  # its tensors the base lacks (task heads)

    def own(self, name: str) -> str:
        """This input's name for the base's tensor ``name``."""
        return self.names.get(name, name)

    @property
    def target(self) -> str:
        return f"{self.reader.model}@{self.reader.commit}"

    def record(self) -> dict[str, Any]:
        return {
            "ref": self.label, "model": self.reader.model, "commit": self.reader.commit,
            "manifest": self.reader.info.manifest,
            "kind": "adapter" if self.adapter is not None else "full",
        }  # fmt: skip


def resolve(repo: Repository, spec: MergeSpec) -> tuple[Resolved | None, list[Resolved]]:
    """The base and the inputs, every adapter matched against the one base."""
    inputs = []
    for item in spec.inputs:
        reader = CommitReader(repo, item.model)
        inputs.append(Resolved(item.model, reader, CommitTensors(reader, item.model)))
    adapters = [r for r in inputs if "adapter" in r.reader.manifest]
    bases = {}
    for found in adapters:
        adapts = found.reader.info.base
        if adapts is None:
            raise InvalidMerge(
                f"{found.label} is an adapter with no recorded base (commit it with --base)"
            )
        bases[found.label] = adapts
    base_ref = spec.base
    if base_ref is None and bases:
        distinct = sorted(set(bases.values()))
        if len(distinct) > 1:
            raise InvalidMerge(
                "adapters on different bases: "
                + ", ".join(f"{label} adapts {_short(b)}" for label, b in bases.items())
            )
        base_ref = distinct[0]
    base = None
    if base_ref is not None:
        reader = CommitReader(repo, base_ref)
        if "adapter" in reader.manifest:
            raise InvalidMerge(f"the base {base_ref} is an adapter, not a model")
        base = Resolved(spec.base or base_ref, reader, CommitTensors(reader, base_ref))
        for label, adapts in bases.items():
            if adapts != base.target:
                raise InvalidMerge(f"{label} adapts {_short(adapts)}, not the base {base.label}")
    for found in adapters:
        assert base is not None
        found.config = adapter_config(found.reader, found.label)
        found.adapter = read_adapter(found.source, found.config, base.source.specs())
    return base, inputs


def _short(target: str) -> str:
    """``NAME@COMMIT`` with the commit id shortened."""
    name, _, commit = target.partition("@")
    return f"{name}@{commit[:12]}"


def _check_same_tensors(reference: TensorSource, other: TensorSource, label: str) -> None:
    expected, found = reference.specs(), other.specs()
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    if missing or extra:
        what = (f"lacks {len(missing)} of the base's tensors ({', '.join(missing[:3])})"
                if missing else
                f"has {len(extra)} tensors the base lacks ({', '.join(extra[:3])})")  # fmt: skip
        raise InvalidMerge(f"{label} {what}: the models do not have the same architecture")
    for name, spec in expected.items():
        other_spec = found[name]
        if other_spec.shape != spec.shape:
            hint = ""
            if len(spec.shape) == 2 and other_spec.shape[1:] == spec.shape[1:]:
                hint = (f" (a different vocabulary: {other_spec.shape[0]} rows against "
                        f"{spec.shape[0]})")  # fmt: skip
            raise InvalidMerge(
                f"{label}: tensor {name} is {list(other_spec.shape)}, the base's is "
                f"{list(spec.shape)}{hint}"
            )
        if (other_spec.dtype in FLOATS) != (spec.dtype in FLOATS):
            raise InvalidMerge(f"{label}: tensor {name} is {other_spec.dtype}, the base's is "
                               f"{spec.dtype}")  # fmt: skip


def _match_task_model(base: TensorSource, found: Resolved) -> None:
    """A full task model (``BertForSequenceClassification``: ``bert.encoder...`` and a head)
    merged over its bare base (``encoder...``): its tensors named as the base's where the base
    has them under the name without the task model's prefix; the rest are its task heads,
    listed as not merged (as an adapter's are). A model with the base's own names is left as
    it is."""
    expected, own = base.specs(), found.source.specs()
    if set(expected) <= set(own):
        return
    names, heads = {}, []
    for name in own:
        target = base_name(name, expected)
        if target is None or target in names:
            heads.append(name)
        else:
            names[target] = name
    if len(names) == len(expected):
        found.names = names
        found.heads = heads


class _Renamed(TensorSource):
    """An input's tensor specs under the base's names (for the same-architecture check)."""

    def __init__(self, found: Resolved) -> None:
        self.found = found
        self.label = found.label

    def specs(self) -> dict[str, TensorSpec]:
        specs = self.found.source.specs()
        if not self.found.names:
            return specs
        return {name: specs[own] for name, own in self.found.names.items()}

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self.found.source.rows(self.found.own(name), start, stop)


def _jobs(
    method: MergeMethod, base: Resolved | None, inputs: list[Resolved], dtype: Any
) -> list[Job]:
    reference = base.source if base is not None else inputs[0].source
    jobs = []
    for name, spec in reference.specs().items():
        parts = []
        for found in inputs:
            adapter = found.adapter
            if adapter is None:
                own = found.own(name)
                base_hash = base.source.identity(name) if base is not None else None
                same = base_hash is not None and found.source.identity(own) == base_hash
                parts.append(Part("zero") if same else Part("tensor", found.source, own))
            elif name in adapter.modules:
                update = LoraUpdate(adapter.modules[name], found.source, dtype)
                parts.append(Part("update", update=update))
            elif name in adapter.biases:
                tensor, scale = adapter.biases[name]
                parts.append(Part("update", update=BiasUpdate(tensor, scale, found.source, dtype)))
            elif name in adapter.replaced:
                parts.append(Part("tensor", found.source, adapter.replaced[name]))
            else:
                parts.append(Part("zero"))
        job = Job(name, spec, parts)
        identities = {p.source.identity(p.name) for p in parts if p.kind == "tensor" and p.source}
        if base is not None and all(p.kind == "zero" for p in parts):
            job.passthrough = base.source.identity(name)
        elif base is None and len(identities) == 1 and None not in identities:
            job.passthrough = identities.pop()
        elif spec.dtype not in FLOATS:
            label = next(f.label for f, p in zip(inputs, parts, strict=True) if p.kind != "zero")
            raise InvalidMerge(f"{label}: tensor {name!r} ({spec.dtype}) differs from the base's, "
                               "and only floating-point tensors can be merged")  # fmt: skip
        jobs.append(job)
    return jobs


def _fisher(repo: Repository, inputs: list[Resolved], jobs: list[Job]) -> list[str]:
    """Attach each input's recorded Fisher to the jobs; the tensors some Fisher lacks."""
    sources = []
    for found in inputs:
        record = fisher_of(repo, found.reader.commit, found.label)
        sources.append(
            SafetensorsBytes(repo.objects.get(record.object), f"Fisher of {found.label}")
        )
    missing = []
    for job in jobs:
        if job.passthrough is not None:
            continue
        names = [found.own(job.name) for found in inputs]
        if all(n in s.specs() and s.specs()[n].shape == job.spec.shape
               for s, n in zip(sources, names, strict=True)):  # fmt: skip
            job.fisher = list(zip(sources, names, strict=True))
        else:
            missing.append(job.name)
    return missing


@dataclass
class Prepared:
    """A merge checked and planned; nothing stored yet."""

    spec: MergeSpec
    method: MergeMethod
    base: Resolved | None
    inputs: list[Resolved]
    engine: Engine
    not_merged: list[str]
    fisher_missing: list[str]

    @property
    def adapters(self) -> bool:
        return any(f.adapter is not None for f in self.inputs)

    def report(self) -> dict[str, Any]:
        outcome = self.engine.outcome
        return {
            "format": REPORT_FORMAT, "method": self.method.name,
            "inputs": [f.label for f in self.inputs],
            "base": self.base.label if self.base else None, "tensors": outcome.records,
            "summary": summarize(outcome.records, outcome.unchanged),
            "not_merged": self.not_merged, "fisher_missing": self.fisher_missing,
        }  # fmt: skip

    def close(self) -> None:
        for found in [*self.inputs, *([self.base] if self.base else [])]:
            found.source.close()


def prepare(repo: Repository, spec: MergeSpec, chunk_bytes: int | None = None) -> Prepared:
    """Resolve and check everything a merge needs, before anything is stored."""
    method = get_method(spec.method)
    base, inputs = resolve(repo, spec)
    adapters = any(f.adapter is not None for f in inputs)
    method.check(spec, has_base=base is not None, adapters=adapters)
    if (adapters or spec.output == "adapter") and base is None:
        raise InvalidMerge("merging adapters, or writing one, needs the base model")
    if base is None and method.space == "delta":
        raise InvalidMerge(f"method {method.name} needs the base model (--base)")
    reference = base.source if base is not None else inputs[0].source
    for found in inputs:
        if found.adapter is None and found.source is not reference:
            if base is not None:
                _match_task_model(base.source, found)
            _check_same_tensors(reference, _Renamed(found), found.label)
    jobs = _jobs(method, base, inputs, _DTYPES[spec.compute_dtype])
    fisher_missing = _fisher(repo, inputs, jobs) if method is FISHER else []
    labels = [f.label for f in inputs]
    plan = Plan(method, spec, base.source if base else None, jobs, labels)
    if chunk_bytes is not None:
        plan.chunk_bytes = chunk_bytes
    engine = Engine(plan)
    not_merged = sorted(
        {n for f in inputs for n in (f.adapter.unmatched if f.adapter else f.heads)}
    )
    return Prepared(spec, method, base, inputs, engine, not_merged, fisher_missing)


@mediated("read", merge_reads)
def merged_tensors(repo: Repository, spec: MergeSpec) -> dict[str, torch.Tensor]:
    """The merged model in memory, nothing recorded (to score candidates, e.g. ``--auto``)."""
    prepared = prepare(repo, spec)
    out: dict[str, torch.Tensor] = {}
    try:
        for name, tensor in prepared.engine.tensors():
            if isinstance(tensor, KnownTensor):
                source = prepared.base or prepared.inputs[0]
                tensor = (
                    source.source.whole(name).clone().reshape(source.source.specs()[name].shape)
                )
            out[name] = tensor
    finally:
        prepared.close()
    return out


def run_merge(
    repo: Repository,
    spec: MergeSpec,
    *,
    name: str | None,
    branch: str | None,
    message: str | None,
    parents: list[str] | None = None,
    kind: str = "merge",
    extra: dict[str, Any] | None = None,
    chunk_bytes: int | None = None,
) -> MergeResult:
    prepared = prepare(repo, spec, chunk_bytes)
    method, base, inputs, engine = prepared.method, prepared.base, prepared.inputs, prepared.engine
    output = None
    try:
        if spec.output == "adapter":
            assert base is not None
            output = AdapterOutput(engine, inputs, base.target, spec.rank)
            model = name
            if model is None and prepared.adapters:
                model = next(f.reader.model for f in inputs if f.adapter is not None)
            if model is None:
                raise InvalidMerge("an adapter output of full models needs --output NAME")
            tensors: Iterator[tuple[str, Any]] = output.tensors()
            files = output.files()
            path, adapts = "adapter_model.safetensors", base.target
        else:
            model = name or (base or inputs[0]).reader.model
            tensors = engine.tensors()
            files = _carried_files(repo, (base or inputs[0]).reader)
            path, adapts = "model.safetensors", None
        if parents is None:
            parents = [r.reader.commit for r in ([base] if base else []) + inputs]
        branch = branch or f"merge/{method.name}"
        head = repo.view(ModelRefs).branches(model).get(branch)
        if head is not None and head not in parents:  # the branch moves on, as git's does
            parents = [head, *parents]
        report: dict[str, Any] = {}
        recorded: dict[str, Any] = {}

        def provenance() -> dict[str, Any]:
            report.update(prepared.report())
            if output is not None:
                report["reconstruction"] = output.reconstruction()
            digest = repo.objects.put(canonical_json(report, f"{kind} report"))
            recorded.update({
                "kind": kind, "method": method.describe(),
                "spec": spec.model_dump(mode="json", by_alias=True),
                "seed": spec.seed, "base": base.record() if base else None,
                "inputs": [dict(f.record(), weight=i.weight)
                           for f, i in zip(inputs, spec.inputs, strict=True)],
                **(extra or {}),
                "report": digest, "refs": [digest], "versions": _versions(),
            })  # fmt: skip
            return recorded

        result = commit_tensors(
            repo, model, tensors, parents=parents, message=message or _message(prepared),
            provenance=provenance, branch=branch, base=adapts,
            path=path, files=files,
        )  # fmt: skip
    finally:
        prepared.close()
    return MergeResult(
        result, spec, report, recorded["report"], recorded, 0.0,
        reconstruction=report.get("reconstruction"), not_merged=prepared.not_merged,
    )  # fmt: skip


def _carried_files(repo: Repository, reader: CommitReader) -> dict[str, bytes]:
    """The non-weight files of the model a full output is built on (config, tokenizer), so
    the merge checks out as a loadable model; a shard index, which no longer applies, is not."""
    files = {}
    for entry in reader.manifest["files"]:
        if entry["kind"] == "blob" and not entry["path"].endswith(_INDEX_FILES):
            files[entry["path"]] = repo.objects.get(entry["object"])
    return files


def _message(prepared: Prepared) -> str:
    spec, method, inputs = prepared.spec, prepared.method, prepared.inputs
    given = sorted(spec.given_parameters())
    values = spec.model_dump(by_alias=True)
    params = ", ".join(f"{p}={values[p]}" for p in given)
    names = ", ".join(f.label for f in inputs)
    return f"merge ({method.name}{', ' + params if params else ''}) of {names}"


def _versions() -> dict[str, str]:
    found = {}
    for package in ("fmforge", "torch", "numpy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def merge_files(
    spec: MergeSpec,
    out: str | os.PathLike[str],
    *,
    chunk_bytes: int | None = None,
) -> dict[str, Any]:
    """Merge safetensors files (``spec.base`` and each input's ``model`` are paths) into the
    file ``out``, streaming; the conflict report. Full models only (no registry involved)."""
    method = get_method(spec.method)
    method.check(spec, has_base=spec.base is not None, adapters=False)
    if spec.output != "full":
        raise InvalidMerge("merge_files writes full models only")
    base = SafetensorsFile(spec.base) if spec.base is not None else None
    inputs = [SafetensorsFile(i.model) for i in spec.inputs]
    try:
        reference = base or inputs[0]
        for source in inputs:
            if source is not reference:
                _check_same_tensors(reference, source, source.label)
        jobs = [
            Job(name, tensor_spec, [Part("tensor", s, name) for s in inputs])
            for name, tensor_spec in reference.specs().items()
        ]
        plan = Plan(method, spec, base, jobs, [s.label for s in inputs])
        if chunk_bytes is not None:
            plan.chunk_bytes = chunk_bytes
        engine = Engine(plan)
        engine.write_file(out)
    finally:
        for source in [*inputs, *([base] if base else [])]:
            source.close()
    outcome = engine.outcome
    return {
        "format": REPORT_FORMAT, "method": method.name, "inputs": plan.labels,
        "base": spec.base, "tensors": outcome.records,
        "summary": summarize(outcome.records, outcome.unchanged),
    }  # fmt: skip
