"""Rolling a deployment back: pin what an adapter reference serves to an earlier commit.

``rollback(repo, "prod", "sentiment@live")`` records ``DeploymentRolledBack`` on
``deployment/prod``: every replica of ``prod`` (they follow the ledger) answers requests for
``sentiment@live`` (and ``sentiment`` where ``live`` is its declared reference) with the commit
``live`` pointed at before its last move, or the commit ``to`` names. Nothing in the model
registry moves: the branch stays where its owners put it, and the pin lifts by itself when the
branch moves again (a fixed version pushed to it), or with a rollback to the branch's head.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmforge.errors import AdapterIncompatible, RefNotFound, UsageError
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.serving.adapters import describe
from fmforge.serving.events import DeploymentRolledBack
from fmforge.serving.views import DeploymentsView


@dataclass(frozen=True)
class RollbackResult:
    deployment: str
    model: str
    ref: str
    commit: str
    previous: str


def rollback(
    repo: Repository, deployment: str, adapter: str, to: str | None = None
) -> RollbackResult:
    """Pin ``adapter`` (``NAME@REF``) in ``deployment`` to ``to`` (a REF of the same model;
    default: where the branch pointed before its current position)."""
    index = repo.view(DeploymentsView)
    index.check(deployment)
    model, ref = split_model_ref(adapter)
    refs = repo.view(ModelRefs)
    current = refs.resolve(model, ref)
    pin = index.pins(deployment).get((model, ref))
    serving = pin.commit if pin is not None else current
    if to is None:
        earlier = [c for c, _time, _seq in refs.branch_log(model, ref) if c != current]
        if not earlier:
            raise RefNotFound(
                f"{model}@{ref} never pointed anywhere else: name the version to roll back to"
            )
        target = earlier[0]
        to = target[:12]
    else:
        target = refs.resolve(model, to)
    if target == serving:
        raise UsageError(
            f"deployment {deployment} already serves {model}@{target[:12]} for {adapter}"
        )
    spec = describe(repo, model, target)
    replicas = index.replicas(deployment)
    bases = {f"{r.base.partition('@')[0]}@{r.base_commit}" for r in replicas}
    if spec.base is not None and bases and spec.base not in bases:
        raise AdapterIncompatible(
            spec.short,
            f"adapts {spec.base.split('@')[0]}@{spec.base.split('@')[1][:12]}, "
            f"not the base deployment {deployment} serves",
        )
    repo.record(
        f"deployment/{deployment}",
        DeploymentRolledBack({
            "deployment": deployment, "model": model, "ref": ref, "commit": target,
            "previous": serving, "to": to,
        }),
    )  # fmt: skip
    return RollbackResult(deployment, model, ref, target, serving)
