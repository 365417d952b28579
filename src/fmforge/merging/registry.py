"""The merge methods, by short name, each with its paper (mergekit's
``merge_methods/registry.py``). Variants are configured instances of one class, listed here."""

from __future__ import annotations

from fmforge.errors import InvalidMerge
from fmforge.hints import did_you_mean
from fmforge.merging.method import MergeMethod
from fmforge.merging.methods.dare import DARE_LINEAR, DARE_TIES
from fmforge.merging.methods.fisher import FISHER
from fmforge.merging.methods.linear import LINEAR
from fmforge.merging.methods.slerp import SLERP
from fmforge.merging.methods.task_arithmetic import TASK_ARITHMETIC
from fmforge.merging.methods.ties import TIES

METHODS: dict[str, MergeMethod] = {
    method.name: method
    for method in (LINEAR, TASK_ARITHMETIC, TIES, DARE_LINEAR, DARE_TIES, FISHER, SLERP)
}


def get_method(name: str) -> MergeMethod:
    method = METHODS.get(name)
    if method is None:
        hint = did_you_mean(name, list(METHODS))
        raise InvalidMerge(f"unknown merge method {name!r}{hint} (known: {', '.join(METHODS)})")
    return method
