"""Finetuning and evaluation: data compiled into model commits, every step a tracked run.

``finetune(repo, FinetuneSpec(...))`` trains (LoRA, full, or a sparse mask) on a dataset
version's weak or gold labels and commits checkpoints and the result; ``evaluate`` records a
commit's score on a split; ``replay`` re-runs a recorded CPU finetune and compares the bits.
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
    "Progress": "fmforge.training.recording",
    "ReplayReport": "fmforge.training.replays",
    "evaluate": "fmforge.training.evaluation",
    "finetune": "fmforge.training.finetuning",
    "replay": "fmforge.training.replays",
}

__all__ = [
    "Evaluation",
    "FinetuneResult",
    "FinetuneSpec",
    "Progress",
    "ReplayReport",
    "evaluate",
    "finetune",
    "replay",
]

if TYPE_CHECKING:
    from fmforge.training.evaluation import Evaluation, evaluate
    from fmforge.training.finetuning import finetune
    from fmforge.training.recording import FinetuneResult, Progress
    from fmforge.training.replays import ReplayReport, replay
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
