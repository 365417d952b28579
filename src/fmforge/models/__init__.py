"""Version control for model weights: commits, branches, tags, bit-exact checkout."""

from __future__ import annotations

from fmforge.models.branches import create_branch, create_tag, delete_branch, reset_branch
from fmforge.models.checkout import (
    CheckoutResult,
    CommitReader,
    LazyStateDict,
    checkout,
    iter_tensors,
    load_state_dict,
    open_model,
)
from fmforge.models.commits import commit_model
from fmforge.models.diff import ModelDiff, diff_models
from fmforge.models.refs import CommitInfo, ModelRefs, RefIndex
from fmforge.models.tensorcommit import KnownTensor, commit_tensors
from fmforge.models.writer import CommitResult

__all__ = [
    "CheckoutResult",
    "CommitInfo",
    "CommitReader",
    "CommitResult",
    "KnownTensor",
    "LazyStateDict",
    "ModelDiff",
    "ModelRefs",
    "RefIndex",
    "checkout",
    "commit_model",
    "commit_tensors",
    "create_branch",
    "create_tag",
    "delete_branch",
    "diff_models",
    "iter_tensors",
    "load_state_dict",
    "open_model",
    "reset_branch",
]
