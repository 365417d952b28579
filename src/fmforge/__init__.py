"""fmforge: engineer foundation models the way software is engineered.

Every fact is an event in a hash-chained ledger; large payloads live in a content-addressed
object store; every other view is a projection rebuilt from the ledger. The names here are the
entry points a user reaches for first (``init``, ``log`` and ``finish``: W&B's one-liner for
scripts, ``fmforge.tracking.quick``); each domain package (``fmforge.models``,
``fmforge.data``, ``fmforge.tracking``, ``fmforge.ledger``, ...) exports the rest. They load on
first use, so ``import fmforge`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "FmforgeError": "fmforge.errors",
    "NewEvent": "fmforge.ledger",
    "Repository": "fmforge.repository",
    "acting_as": "fmforge.repository",
    "add_dataset": "fmforge.data",
    "checkout": "fmforge.models",
    "commit_model": "fmforge.models",
    "commit_tensors": "fmforge.models",
    "finish": "fmforge.tracking.quick",
    "init": "fmforge.tracking.quick",
    "log": "fmforge.tracking.quick",
    "iter_tensors": "fmforge.models",
    "load_state_dict": "fmforge.models",
    "open_model": "fmforge.models",
    "read_table": "fmforge.data",
    "start_run": "fmforge.tracking",
}

__all__ = [
    "FmforgeError",
    "NewEvent",
    "Repository",
    "__version__",
    "acting_as",
    "add_dataset",
    "checkout",
    "commit_model",
    "commit_tensors",
    "finish",
    "init",
    "iter_tensors",
    "load_state_dict",
    "log",
    "open_model",
    "read_table",
    "start_run",
]

if TYPE_CHECKING:
    from fmforge.data import add_dataset, read_table
    from fmforge.errors import FmforgeError
    from fmforge.ledger import NewEvent
    from fmforge.models import (
        commit_model,
        commit_tensors,
        iter_tensors,
        load_state_dict,
        open_model,
    )

    # the function, from its module: fmforge.models.checkout is also that module's name, and
    # inside an import cycle mypy may bind the name to the module first
    from fmforge.models.checkout import checkout
    from fmforge.repository import Repository, acting_as
    from fmforge.tracking import start_run
    from fmforge.tracking.quick import finish, init, log


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fmforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
