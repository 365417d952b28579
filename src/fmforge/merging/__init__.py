"""Merging models and adapters: methods in a registry, a streaming engine, conflict reports,
and rebasing a finetune onto an updated base. One call: ``merge(repo, MergeSpec(...))``;
rebasing is ``fmforge.merging.rebase.rebase`` (the module's own name).

The names load on first use: the spec (``MergeSpec``) does not import torch, so the CLI can
derive its options from it without paying for torch on every command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "METHODS": "fmforge.merging.registry",
    "MergeInput": "fmforge.merging.base",
    "MergeResult": "fmforge.merging.base",
    "MergeSpec": "fmforge.merging.base",
    "RebaseResult": "fmforge.merging.rebase",
    "get_method": "fmforge.merging.registry",
    "merge": "fmforge.merging.base",
    "merge_files": "fmforge.merging.planning",
    "merged_tensors": "fmforge.merging.planning",
    "parse_spec": "fmforge.merging.base",
    "search": "fmforge.merging.auto",
}

__all__ = [
    "METHODS",
    "MergeInput",
    "MergeResult",
    "MergeSpec",
    "RebaseResult",
    "get_method",
    "merge",
    "merge_files",
    "merged_tensors",
    "parse_spec",
    "search",
]

if TYPE_CHECKING:
    from fmforge.merging.auto import search
    from fmforge.merging.base import MergeInput, MergeResult, MergeSpec, merge, parse_spec
    from fmforge.merging.planning import merge_files, merged_tensors
    from fmforge.merging.rebase import RebaseResult
    from fmforge.merging.registry import METHODS, get_method


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fmforge.merging' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
