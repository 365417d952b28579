"""Version control for model weights: commits, branches, tags, bit-exact checkout."""

from __future__ import annotations

from fmforge.models.branches import create_branch, create_tag, reset_branch
from fmforge.models.checkout import CheckoutResult, checkout
from fmforge.models.commits import CommitResult, commit_model, refs
from fmforge.models.refs import CommitInfo, ModelRefs, RefIndex

__all__ = [
    "CheckoutResult",
    "CommitInfo",
    "CommitResult",
    "ModelRefs",
    "RefIndex",
    "checkout",
    "commit_model",
    "create_branch",
    "create_tag",
    "refs",
    "reset_branch",
]
