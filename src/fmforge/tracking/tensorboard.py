"""Importing TensorBoard event files as fmforge runs (``fmforge runs import-tb DIR``).

Each directory holding event files becomes one run (named after its path under DIR), its
scalars logged at their steps with their original wall times kept in the chunk. Reading uses
TensorBoard's own ``EventAccumulator``, with no limit on how many scalars it keeps.
"""

from __future__ import annotations

from pathlib import Path

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import FmforgeError
from fmforge.repository import Repository
from fmforge.tracking.runs import Run


def _event_directories(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*") if p.is_file()})


@mediated("write", targets.fixed("run"))
def import_tensorboard(repo: Repository, root: str | Path, *, project: str) -> list[str]:
    """Runs created from every event-file directory under ``root``; returns their ids."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            SCALARS,
            EventAccumulator,
        )
    except ImportError:
        raise FmforgeError("importing TensorBoard files needs `pip install tensorboard`") from None
    root = Path(root)
    directories = _event_directories(root)
    if not directories:
        raise FmforgeError(f"{root}: no TensorBoard event files (events.out.tfevents.*) found")
    ids = []
    for directory in directories:
        accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0})
        accumulator.Reload()
        name = directory.relative_to(root).as_posix() if directory != root else root.name
        run = Run(
            repo, project, name=name, tags=["tensorboard"], detectors=[], system_interval=None
        )
        by_step: dict[int, dict[str, tuple[float, float]]] = {}
        for tag in accumulator.Tags()[SCALARS]:
            for event in accumulator.Scalars(tag):
                by_step.setdefault(event.step, {})[tag] = (event.value, event.wall_time)
        for step, values in sorted(by_step.items()):
            run.log_at({tag: value for tag, (value, _) in values.items()}, step=step,
                       wall_time=min(t for _, t in values.values()))  # fmt: skip
        run.finish()
        ids.append(run.id)
    return ids
