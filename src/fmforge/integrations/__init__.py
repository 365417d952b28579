"""One short import for the training-framework integrations::

    from fmforge.integrations import FmforgeCallback, FmforgeLogger

``FmforgeCallback`` records a Hugging Face ``Trainer``'s run
(``fmforge.tracking.integrations.transformers``), ``FmforgeLogger`` a PyTorch Lightning
``Trainer``'s (``fmforge.tracking.integrations.lightning``). Each is imported on first use, so
importing this package needs neither framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "FmforgeCallback": "fmforge.tracking.integrations.transformers",
    "FmforgeLogger": "fmforge.tracking.integrations.lightning",
}

__all__ = ["FmforgeCallback", "FmforgeLogger"]

if TYPE_CHECKING:
    from fmforge.tracking.integrations.lightning import FmforgeLogger
    from fmforge.tracking.integrations.transformers import FmforgeCallback


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fmforge.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
