"""Model commits as the dashboard shows them: the per-layer weight change of a commit."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter

from fmforge.errors import InvalidRequest
from fmforge.models.diff import diff_models
from fmforge.models.refs import ModelRefs
from fmforge.server.encoding import json_safe
from fmforge.server.state import State

router = APIRouter(prefix="/api/models")


@router.get("/{model}/commits/{commit}/changes")
async def weight_changes(model: str, commit: str, state: State, against: str | None = None) -> Any:
    """Per-layer weight change of a commit against ``against`` (default: its first parent):
    the registry's diff, summarised for a chart."""
    repo = state.repo
    index = repo.view(ModelRefs)
    info = index.commit(index.resolve(model, commit))
    base = against or (info.parents[0] if info.parents else None)
    if base is None:
        raise InvalidRequest(f"{model}@{info.commit[:12]} has no parent; name one with ?against=")
    report = diff_models(repo, f"{model}@{base}", f"{model}@{info.commit}", rank=False)
    return json_safe(
        {
            "model": model, "commit": info.commit, "against": base,
            "counts": report.counts(),
            "layers": [
                {"layer": s.layer, "relative": s.relative, "l2": math.sqrt(s.l2),
                 "changed": s.changed, "tensors": s.tensors}
                for s in report.layers
            ],
        }
    )  # fmt: skip
