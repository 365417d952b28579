"""Finetuning and evaluation: data compiled into model commits, every step a tracked run.

``finetune(repo, FinetuneSpec(...))`` trains (LoRA, full, or a FishMask sparse update) on a
dataset version's weak or gold labels and commits checkpoints and the result; ``evaluate``
records a commit's score on a split; ``replay`` re-runs a recorded CPU finetune and compares the
bits; ``compute_fisher``/``load_fisher`` store and read a commit's diagonal Fisher;
``fmforge.training.search.search`` is ``finetune --auto`` (budgeted, pruned hyperparameter
search; the module shares the name, so the function is not exported here); ``select_model`` ranks
candidate models for a task by LogME, cross-checked by a linear probe.
Needs the ``training`` extra (transformers, peft) and torch; names load on first use, so
importing this package (for ``FinetuneSpec``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Evaluation": "fmforge.training.evaluation",
    "FinetuneResult": "fmforge.training.recording",
    "FinetuneSpec": "fmforge.training.spec",
    "FisherResult": "fmforge.training.fisher",
    "Progress": "fmforge.training.recording",
    "ReplayReport": "fmforge.training.replays",
    "SearchResult": "fmforge.training.search",
    "SearchSpec": "fmforge.training.search",
    "Selection": "fmforge.training.selection",
    "compute_fisher": "fmforge.training.fisher",
    "evaluate": "fmforge.training.evaluation",
    "finetune": "fmforge.training.finetuning",
    "load_fisher": "fmforge.training.fisher",
    "replay": "fmforge.training.replays",
    "select_model": "fmforge.training.selection",
}

__all__ = [
    "Evaluation",
    "FinetuneResult",
    "FinetuneSpec",
    "FisherResult",
    "Progress",
    "ReplayReport",
    "SearchResult",
    "SearchSpec",
    "Selection",
    "compute_fisher",
    "evaluate",
    "finetune",
    "load_fisher",
    "replay",
    "select_model",
]

if TYPE_CHECKING:
    from fmforge.training.evaluation import Evaluation, evaluate
    from fmforge.training.finetuning import finetune
    from fmforge.training.fisher import FisherResult, compute_fisher, load_fisher
    from fmforge.training.recording import FinetuneResult, Progress
    from fmforge.training.replays import ReplayReport, replay
    from fmforge.training.search import SearchResult, SearchSpec
    from fmforge.training.selection import Selection, select_model
    from fmforge.training.spec import FinetuneSpec


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fmforge.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
