"""``--nproc N``: the same finetune under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).

The calling process checks the spec and resolves what a resume goes on from (so every rank
agrees), writes the job to a file and runs ``python -m torch.distributed.run --standalone
--nproc-per-node N -m fmforge.training.distributed JOB``. Each rank opens the repository, reads
the same inputs and trains its share of every batch (see ``fmforge.training.loop``); rank 0
alone starts the run, logs, commits checkpoints and the result, and writes the result (or the
error that stopped it) next to the job file, which the caller returns (or raises).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmforge import errors
from fmforge.errors import FmforgeError, TrainingFailed
from fmforge.repository import Repository
from fmforge.training.resume import Checkpoint
from fmforge.training.spec import FinetuneSpec

if TYPE_CHECKING:
    from fmforge.training.recording import FinetuneResult


def launch(
    repo: Repository,
    spec: FinetuneSpec,
    *,
    nproc: int,
    checkpoint: Checkpoint | None,
    name: str | None,
    tags: Sequence[str],
) -> FinetuneResult:
    """Run the finetune on ``nproc`` processes; returns rank 0's ``FinetuneResult``."""
    from fmforge.training.evaluation import Evaluation
    from fmforge.training.recording import FinetuneResult as Result

    with tempfile.TemporaryDirectory(prefix="fmforge-torchrun-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "store": str(repo.root),
                    "spec": spec.model_dump(mode="json"),
                    "name": name,
                    "tags": list(tags),
                    "checkpoint": checkpoint.record() if checkpoint else None,
                }
            )
        )
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "--module", "fmforge.training.distributed", str(job),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads or 1)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        answer = job.with_suffix(".result.json")
        if not answer.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            tail = next((line for line in reversed(lines) if "Error" in line), None)
            raise TrainingFailed(
                f"torchrun exited with {done.returncode}: {tail or (lines[-1] if lines else '')}"
            )
        found = json.loads(answer.read_text())
    if "error" in found:
        kind = getattr(errors, str(found.get("type")), None)
        if isinstance(kind, type) and issubclass(kind, FmforgeError):
            try:
                raise kind(found["error"])
            except TypeError:  # an error class whose constructor takes other arguments
                pass
        raise TrainingFailed(found["error"])
    data = found["result"]
    evaluations = tuple(Evaluation(**e) for e in data.pop("evaluations"))
    data["checkpoints"] = tuple(tuple(c) for c in data["checkpoints"])
    return Result(**data, evaluations=evaluations)


def main(argv: Sequence[str] | None = None) -> int:
    """One rank of a torchrun launched by ``launch``."""
    import torch
    import torch.distributed as dist

    from fmforge.training.finetuning import train
    from fmforge.training.loop import World

    (path,) = argv if argv is not None else sys.argv[1:]
    job_file = Path(path)
    job = json.loads(job_file.read_text())
    spec = FinetuneSpec.parse(job["spec"])
    backend = "nccl" if spec.device == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    rank, size = dist.get_rank(), dist.get_world_size()
    if spec.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    answer: dict[str, Any]
    try:
        with Repository.open(job["store"]) as repo:
            point = Checkpoint(**job["checkpoint"]) if job["checkpoint"] else None
            result = train(
                repo,
                spec,
                world=World(rank, size),
                resume=None,
                checkpoint=point,
                name=job["name"],
                tags=job["tags"],
            )
        answer = {"result": result.to_json()}
    except FmforgeError as exc:
        answer = {"error": str(exc), "type": type(exc).__name__}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        target = job_file.with_suffix(".result.json")
        target.with_suffix(".tmp").write_text(json.dumps(answer))
        target.with_suffix(".tmp").rename(target)
    return 0 if "result" in answer else 1


if __name__ == "__main__":
    sys.exit(main())
