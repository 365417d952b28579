"""Version control for model weights: commits, branches, tags, bit-exact checkout."""

from __future__ import annotations

from fmforge.models.branches import create_branch, create_tag, reset_branch
from fmforge.models.checkout import (
    CheckoutResult,
    LazyStateDict,
    checkout,
    load_state_dict,
    open_model,
)
from fmforge.models.commits import CommitResult, commit_model, refs
from fmforge.models.diff import ModelDiff, diff_models
from fmforge.models.refs import CommitInfo, ModelRefs, RefIndex

__all__ = [
    "CheckoutResult",
    "CommitInfo",
    "CommitResult",
    "LazyStateDict",
    "ModelDiff",
    "ModelRefs",
    "RefIndex",
    "checkout",
    "commit_model",
    "create_branch",
    "create_tag",
    "diff_models",
    "load_state_dict",
    "open_model",
    "refs",
    "reset_branch",
]
