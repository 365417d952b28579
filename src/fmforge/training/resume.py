"""Resuming a finetune from its last checkpoint commit, and finding which run to resume.

A finetune run records its resolved spec (``config.finetune``), the spec's digest, the base
commit, the data version and its process (host, pid). A run is resumable when it has a
checkpoint and did not finish: explicitly (``--resume RUN``, any such run of the same spec) or
automatically, when a run of the same spec, base commit and data version crashed: its process
is gone (same host: the pid is dead or belongs to a newer process), or it went silent for the
heartbeat timeout (another host), and no later run resumed it already.

A resumed run is a new run whose config names what it went on from (``resumed_from``: run,
step, commit); its first checkpoint is parented on that commit, so the ``runs/`` branches show
one line of history.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmforge.errors import InvalidSpec
from fmforge.models.checkout import open_model
from fmforge.repository import Repository
from fmforge.tracking.views import RunRecord, RunsView
from fmforge.training.spec import FinetuneSpec, option

RESUMABLE = ("crashed", "running", "failed", "stopped")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint commit of a run, where a resumed run goes on from."""

    run: str
    step: int
    model: str
    commit: str

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.commit}"

    def directory(self, repo: Repository) -> Path:
        return open_model(self.ref, repo=repo)

    def record(self) -> dict[str, Any]:
        return {"run": self.run, "step": self.step, "model": self.model, "commit": self.commit}


def recorded_spec(record: RunRecord) -> FinetuneSpec:
    """The resolved spec a finetune run recorded."""
    values = record.config.get("finetune")
    if not isinstance(values, dict):
        raise InvalidSpec(f"run {record.name} ({record.id[-12:]}) was not recorded by finetune")
    return FinetuneSpec.parse(values)


def last_checkpoint(record: RunRecord) -> Checkpoint | None:
    if not record.checkpoints:
        return None
    last = record.checkpoints[-1]
    return Checkpoint(record.id, int(last["step"]), str(last["model"]), str(last["commit"]))


def explicit(repo: Repository, run: str, spec: FinetuneSpec) -> Checkpoint:
    """The checkpoint ``--resume RUN`` goes on from; refused unless RUN ran this spec."""
    index = repo.view(RunsView)
    record = index.run(index.resolve(run))
    recorded = recorded_spec(record)
    if recorded.digest() != spec.digest():
        theirs, ours = recorded.model_dump(mode="json"), spec.model_dump(mode="json")
        field = next(k for k in theirs if theirs[k] != ours.get(k))
        raise InvalidSpec(
            f"--resume {run}: that run was started with {option(field)} {theirs[field]!r}, "
            f"not {ours.get(field)!r}"
        )
    if record.status == "finished":
        raise InvalidSpec(f"--resume {run}: that run finished; nothing to resume")
    checkpoint = last_checkpoint(record)
    if checkpoint is None:
        raise InvalidSpec(f"--resume {run}: that run committed no checkpoint to resume from")
    return checkpoint


def automatic(
    repo: Repository, spec: FinetuneSpec, base_commit: str, data_version: str
) -> Checkpoint | None:
    """The last checkpoint of the newest crashed run of this spec (same base commit and data
    version) that no run resumed yet, if any."""
    index = repo.view(RunsView)
    digest = spec.digest()
    rows = index.rows(project=spec.project, strict_metrics=False)
    resumed = {row["config"].get("resumed_from.run") for row in rows}
    for row in rows:  # newest first
        config = row["config"]
        if (
            config.get("spec_digest") != digest
            or config.get("base.commit") != base_commit
            or config.get("data.version") != data_version
            or row["id"] in resumed
            or not row["checkpoints"]
        ):
            continue
        if row["status"] == "crashed" or (row["status"] == "running" and _dead(config, row)):
            return last_checkpoint(index.run(row["id"]))
    return None


def _dead(config: dict[str, Any], row: dict[str, Any]) -> bool:
    """Whether the process of a run that looks alive is gone (only known on its own host)."""
    if config.get("process.host") != socket.gethostname():
        return False
    pid = config.get("process.pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return True
        created = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's live process
        return False
    return bool(created > float(row["started"]) + 1.0)  # the pid was reused since
