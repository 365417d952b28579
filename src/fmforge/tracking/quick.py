"""A one-line logging API for scripts, as W&B's::

    import fmforge
    fmforge.init(project="sentiment", config={"lr": 3e-4})
    for step in range(100):
        fmforge.log({"loss": loss}, step=step)
    fmforge.finish()

``init`` starts a run and makes it the current one (and returns it); ``log`` logs to it;
``finish`` ends it (at interpreter exit it is finished anyway, as ``failed`` when the script
died of an exception). Outside any repository, ``init`` creates one in the current directory,
where MLflow would create ``./mlruns`` (``$FMFORGE_STORE`` names another place, as for every
command); the repository found or created is the nearest ``.fmforge/`` above, as for git.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmforge.errors import RepositoryNotFound, UsageError
from fmforge.repository import Repository
from fmforge.settings import STORE_ENV
from fmforge.tracking.runs import Run

_lock = threading.Lock()
_current: Run | None = None
_hooked = False


def init(
    project: str,
    *,
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
    repo: Repository | None = None,
    **options: Any,
) -> Run:
    """Start a run of ``project`` and make it the current one (a current run left open is
    finished first); ``options`` as ``start_run``'s."""
    global _current, _hooked
    owns = repo is None
    opened = repo or _open_or_create()
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous.finish()
    run = Run(opened, project, name=name, config=config, owns_repo=owns, **options)
    with _lock:
        _current = run
        if not _hooked:
            atexit.register(_at_exit)
            _hooked = True
    return run


def log(metrics: Mapping[str, Any], step: int | None = None, **counts: int) -> None:
    """``run.log`` on the current run (``samples=``, ``tokens=`` as there)."""
    current().log(metrics, step=step, **counts)


def finish(status: str = "finished", error: str | None = None) -> None:
    """End the current run (nothing to do when there is none)."""
    global _current
    with _lock:
        run, _current = _current, None
    if run is not None:
        run.finish(status, error)


def current() -> Run:
    """The run ``init`` started and ``finish`` has not ended."""
    run = _current
    if run is None:
        raise UsageError("no current run: call fmforge.init(project=...) first")
    return run


def _open_or_create() -> Repository:
    try:
        return Repository.open()
    except RepositoryNotFound:
        where = os.environ.get(STORE_ENV) or "."
        Path(where).mkdir(parents=True, exist_ok=True)
        return Repository.init(where)


def _at_exit() -> None:
    died = getattr(sys, "last_value", None)
    if died is not None:
        finish("failed", f"{type(died).__name__}: {died}")
    else:
        finish()
