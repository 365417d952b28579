"""Merging models and adapters: methods in a registry, a streaming engine, conflict reports,
and rebasing a finetune onto an updated base. One call: ``merge(repo, MergeSpec(...))``."""

from __future__ import annotations

from fmforge.merging.base import MergeInput, MergeResult, MergeSpec, merge, parse_spec
from fmforge.merging.planning import merge_files
from fmforge.merging.registry import METHODS, get_method

__all__ = [
    "METHODS",
    "MergeInput",
    "MergeResult",
    "MergeSpec",
    "get_method",
    "merge",
    "merge_files",
    "parse_spec",
]
