"""Rebase a finetune onto an updated base: how a domain finetune follows its base model's fix.

A full finetune θ_ft of a base θ_old is re-applied to the new base as θ' = θ_new + (θ_ft -
θ_old): task arithmetic with θ_old as the base and the finetune and the new base as inputs, so
the conflict report compares the finetune's task vector τ with the base's update u = θ_new -
θ_old tensor by tensor (cosine, entries both change with opposite signs). Computed in float64 it
is exact where only one side changed a tensor: such a tensor comes back bit for bit (and, stored
by hash, costs nothing). θ_old is the commit both descend from (as ``git rebase`` finds it), or is
given (``old_base``). An adapter is re-applied as it is: the same tensors, its base now the new
one, its update checked against the base's update the same way.

The result is committed with both parents (the finetune, then the new base), onto the
finetune's branch by default, which it descends from. Then the finetune's recorded evaluations
(``CommitEvaluated``) are re-run on the result by an evaluator: ``fmforge.training.evaluate``
by default, or one passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fmforge.access import targets
from fmforge.access.mediation import Need, mediated
from fmforge.errors import FmforgeError, InvalidMerge
from fmforge.ledger.events import canonical_json
from fmforge.merging.base import MergeResult, MergeSpec
from fmforge.merging.planning import prepare, run_merge
from fmforge.models import CommitReader
from fmforge.models.evaluations import EvaluationRecord, ModelEvaluations
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.models.tensorcommit import KnownTensor, commit_tensors
from fmforge.models.writer import CommitResult
from fmforge.repository import Repository

# An evaluator re-runs one recorded evaluation on a commit: called as
# ``evaluate(repo, "NAME@COMMIT", record)`` with the ``EvaluationRecord`` of the finetune's
# evaluation, it returns the metrics (and records its own ``CommitEvaluated``). By default,
# ``fmforge.training.evaluate`` on the same dataset version, split, metrics and task.
Evaluator = Callable[[Repository, str, EvaluationRecord], Mapping[str, Any]]


@dataclass
class RebaseResult:
    commit: CommitResult
    finetune: str  # NAME@COMMIT
    old_base: str
    new_base: str
    kind: str  # full | adapter
    report: dict[str, Any]
    report_object: str
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    not_evaluated: str | None = None  # why the recorded evaluations were not re-run

    @property
    def target(self) -> str:
        return f"{self.commit.model}@{self.commit.commit}"


def _rebase_needs(repo: Repository, args: Any) -> list[Need]:
    """``commit`` on the branch the result goes to, ``read`` on what it is made from."""
    finetune = args["finetune"]
    name = finetune.partition("@")[0]
    target = (
        targets.branch_resource(name, args["branch"])
        if args.get("branch")
        else targets.model_resource(repo, finetune)
    )
    out: list[Need] = [("commit", target), ("read", targets.model_resource(repo, finetune))]
    for source in (args["onto"], args.get("old_base")):
        if source:
            out.append(("read", targets.model_resource(repo, source)))
    return out


@mediated("commit", _rebase_needs)
def rebase(
    repo: Repository,
    finetune: str,
    onto: str,
    *,
    old_base: str | None = None,
    branch: str | None = None,
    message: str | None = None,
    evaluate: Evaluator | None = None,
) -> RebaseResult:
    """Re-apply ``finetune`` (``NAME@REF``, a full model or an adapter) to ``onto``
    (``NAME@REF``) and commit the result on ``branch`` (default: the finetune's REF when it is a
    branch) with both parents."""
    ft = CommitReader(repo, finetune)
    new = CommitReader(repo, onto)
    if "adapter" in new.manifest:
        raise InvalidMerge(f"{onto} is an adapter: rebase onto a model")
    model, ref = split_model_ref(finetune)
    index = repo.view(ModelRefs)
    if branch is None:
        if ref not in index.branches(model):
            raise InvalidMerge(f"{finetune} is not a branch: give --branch for the result")
        branch = ref
    adapter = "adapter" in ft.manifest
    old = _old_base(repo, ft, new, old_base, adapter)
    if old == f"{new.model}@{new.commit}":
        raise InvalidMerge(f"{finetune} is already based on {onto}")
    target_new = f"{new.model}@{new.commit}"
    spec = MergeSpec.model_validate({
        "method": "task_arithmetic", "base": old,
        "inputs": [{"model": f"{ft.model}@{ft.commit}"}, {"model": target_new}],
    })  # fmt: skip
    extra = {"finetune": f"{ft.model}@{ft.commit}", "onto": target_new, "from": old}
    text = message or f"rebase {finetune} onto {onto}"
    if adapter:
        commit, report, digest = _rebase_adapter(repo, ft, spec, branch, text, target_new, extra)
    else:
        merged: MergeResult = run_merge(
            repo, spec, name=ft.model, branch=branch, message=text,
            parents=[ft.commit, new.commit], kind="rebase", extra=extra,
        )  # fmt: skip
        commit, report, digest = merged.commit, merged.report, merged.report_object
    result = RebaseResult(
        commit, extra["finetune"], old, target_new, "adapter" if adapter else "full",
        report, digest,
    )  # fmt: skip
    _reevaluate(repo, ft.commit, result, evaluate)
    return result


def _old_base(
    repo: Repository, ft: CommitReader, new: CommitReader, given: str | None, adapter: bool
) -> str:
    if given is not None:
        reader = CommitReader(repo, given)
        return f"{reader.model}@{reader.commit}"
    if adapter:
        if ft.info.base is None:
            raise InvalidMerge(f"{ft.model}@{ft.commit[:12]} is an adapter with no recorded base")
        return ft.info.base
    index = repo.view(ModelRefs)
    ours, theirs = index.ancestors(ft.commit), index.ancestors(new.commit)
    if ft.commit in theirs:
        raise InvalidMerge(f"{ft.model}@{ft.commit[:12]} is already part of the new base")
    common = ours & theirs
    if not common:
        raise InvalidMerge(
            f"{ft.model}@{ft.commit[:12]} and {new.model}@{new.commit[:12]} share no commit: "
            "give the base the finetune started from (--from)"
        )
    # the newest common ancestor no other common ancestor descends from
    newest = max(common, key=lambda c: index.commit(c).seq)
    info = index.commit(newest)
    return f"{info.model}@{info.commit}"


def _rebase_adapter(
    repo: Repository,
    ft: CommitReader,
    spec: MergeSpec,
    branch: str,
    message: str,
    target_new: str,
    extra: dict[str, Any],
) -> tuple[CommitResult, dict[str, Any], str]:
    """The same adapter on the new base, its update checked against the base's update."""
    prepared = prepare(repo, spec)
    try:
        touched = {
            job.name
            for job in prepared.engine.plan.jobs
            if job.parts[0].kind != "zero" and job.passthrough is None
        }
        prepared.engine.plan.jobs = [j for j in prepared.engine.plan.jobs if j.name in touched]
        for _job, _delta in prepared.engine.deltas():
            pass  # the statistics are what a rebase of an adapter needs
        report = prepared.report()
    finally:
        prepared.close()
    digest = repo.objects.put(canonical_json(report, "rebase report"))
    files = {}
    for entry in ft.manifest["files"]:
        if entry["kind"] == "blob":
            content = repo.objects.get(entry["object"])
            if entry["path"].rsplit("/", 1)[-1] in ("adapter_config.json", "fmforge_task.json"):
                content = _with_base(content, target_new)
            files[entry["path"]] = content
    weights = [e for e in ft.manifest["files"] if e["kind"] in ("safetensors", "torch")]
    if len(weights) != 1 or weights[0]["kind"] != "safetensors":
        raise InvalidMerge(
            f"{ft.model}@{ft.commit[:12]}: only an adapter in one safetensors file is rebased"
        )
    tensors = [(name, KnownTensor(raw)) for name, raw, _spec in ft.tensors()]
    commit = commit_tensors(
        repo, ft.model, tensors, parents=[ft.commit, target_new.split("@")[1]],
        message=message, branch=branch, base=target_new, path=weights[0]["path"], files=files,
        provenance={"kind": "rebase", **extra, "report": digest, "refs": [digest]},
    )  # fmt: skip
    return commit, report, digest


def _with_base(content: bytes, target: str) -> bytes:
    """PEFT's config, or a finetune's ``fmforge_task.json``, naming the new base."""
    config = orjson.loads(content)
    if isinstance(config, dict):
        key = "base_model_name_or_path" if "base_model_name_or_path" in config else "base"
        if key == "base" and "base" not in config:
            return content
        config[key] = target
        return orjson.dumps(config, option=orjson.OPT_INDENT_2)
    return content


def training_evaluator(repo: Repository, target: str, record: EvaluationRecord) -> dict[str, Any]:
    """Re-run ``record`` on ``target`` with ``fmforge.training.evaluate`` (the same dataset
    version, split, metrics and task), recording the result on ``target``."""
    from fmforge.training import evaluate

    done = evaluate(
        repo, target, record.dataset, split=record.split, metrics=sorted(record.metrics),
        task=record.task,
    )  # fmt: skip
    return dict(done.metrics)


def _reevaluate(
    repo: Repository, commit: str, result: RebaseResult, evaluate: Evaluator | None
) -> None:
    recorded = repo.view(ModelEvaluations).of_commit(commit)
    if not recorded:
        return
    evaluate = evaluate or training_evaluator
    failed: list[str] = []
    for record in recorded:
        try:
            after = dict(evaluate(repo, result.target, record))
        except FmforgeError as exc:  # e.g. the dataset's rows were forgotten since
            failed.append(f"{record.where}: {exc}")
            continue
        result.evaluations.append({
            "dataset": record.dataset, "dataset_version": record.dataset_version,
            "split": record.split, "before": record.metrics, "after": after,
        })  # fmt: skip
    if failed:
        result.not_evaluated = f"{len(failed)} recorded evaluation(s) not re-run: " + "; ".join(
            failed
        )
