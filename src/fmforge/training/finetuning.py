"""``finetune(repo, spec)``: a tracked finetune whose checkpoints and result are commits.

    spec = FinetuneSpec(base="minilm@main", data="youtube@v3", eval_split="valid",
                        test_split="test", epochs=3)
    result = finetune(repo, spec)          # FinetuneResult: run, commit, metrics, ...

Order of work: everything that can be refused is checked first (the base is a registered
model and not an adapter, the data has the columns, splits and labels asked for, the model
loads for the task with those LoRA targets, the output is a place for this result) and nothing
is recorded until then. Then a run starts (project ``spec.project``; config: the resolved spec
and its digest, base commit, data version and rows used, process), the loop trains, logging
``loss``/``lr``/``epoch`` per step and ``eval_<metric>`` at each evaluation, committing a
checkpoint on branch ``runs/<run id>`` of the base model at each epoch's end (or every
``checkpoint_steps``). The result is committed (an adapter as model ``BASE-DATA-lora`` with its
base recorded; a full or sparse model on branch ``finetune/<run name>`` of the base, parented on
the base commit; ``--output`` for elsewhere), evaluated on the eval and test splits
(``CommitEvaluated``, and run metrics ``eval_*``/``test_*`` for ``fmforge runs ls``).

Seams for a search: ``callback(progress)`` after each evaluation (return True to stop: the run
ends ``stopped`` and nothing is committed as a result), ``deadline`` (a ``time.monotonic()``
past which the loop stops at the next step, the run tagged as interrupted by a budget);
``masks`` for ``--method sparse`` (default: FishMask, the entries of largest Fisher of the base
on the training rows, see ``fmforge.training.fisher``);
``resume`` (``"auto"``: a crashed run of the same spec goes on from its last checkpoint;
``None``: never; a run id: that one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import InvalidSpec, ModelNotFound
from fmforge.models.checkout import CommitReader, open_model
from fmforge.models.names import validate_model_name, validate_ref_name
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.tracking import start_run
from fmforge.training import resume as resuming
from fmforge.training.data import load_training_data
from fmforge.training.loop import Loop, World
from fmforge.training.masks import fishmask, resolve_masks, saved_masks
from fmforge.training.modeling import Job, build_model, load_tokenizer
from fmforge.training.recording import (
    RESULT_TAG,
    Callback,
    FinetuneResult,
    Progress,
    RunSink,
    Silent,
    finish,
    run_config,
)
from fmforge.training.spec import FinetuneSpec

__all__ = ["RESULT_TAG", "Callback", "FinetuneResult", "Progress", "finetune", "prepare", "train"]


def _needs(repo: Repository, args: Any) -> list[tuple[str, str]]:
    """``use`` of the data and the base (licences and consent checked for the purpose), and
    ``commit`` to where the result goes."""
    spec: FinetuneSpec = args["spec"]
    out: list[tuple[str, str]] = [
        ("use", targets.dataset_resource(repo, spec.data)),
        ("use", targets.model_resource(repo, spec.base)),
    ]
    base = spec.base.partition("@")[0]
    if spec.output:
        model, _, branch = spec.output.partition("@")
        out.append(("commit", targets.branch_resource(model, branch or "main")))
    elif spec.method == "lora":
        dataset = spec.data.partition("@")[0]
        out.append(("commit", targets.branch_resource(f"{base}-{dataset}-lora", "main")))
    else:
        out.append(("commit", targets.model_resource(repo, base)))
    return out


@mediated("use", _needs)
def finetune(
    repo: Repository,
    spec: FinetuneSpec,
    *,
    resume: str | None = "auto",
    masks: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    nproc: int = 1,
    name: str | None = None,
    tags: Sequence[str] = (),
    deadline: float | None = None,
) -> FinetuneResult:
    """Finetune as ``spec`` says, tracked as a run; see the module docstring. ``nproc`` > 1
    runs the same job under ``torchrun`` (DDP), rank 0 alone recording."""
    if nproc > 1:
        if masks is not None or callback is not None or deadline is not None:
            raise InvalidSpec("--nproc: masks, callbacks and deadlines need a single process")
        from fmforge.training.distributed import launch

        if spec.threads is None:  # the cores shared out, not each rank taking them all
            spec = spec.model_copy(update={"threads": max(1, (os.cpu_count() or 1) // nproc)})
        with determinism(spec) as resolved:
            job = prepare(repo, resolved)
            point = _resume_point(repo, job, resume)
        return launch(repo, resolved, nproc=nproc, checkpoint=point, name=name, tags=tags)
    return train(
        repo, spec, resume=resume, masks=masks, callback=callback, name=name, tags=tags,
        deadline=deadline,
    )  # fmt: skip


def train(
    repo: Repository,
    spec: FinetuneSpec,
    *,
    world: World | None = None,
    resume: str | None = "auto",
    checkpoint: resuming.Checkpoint | None = None,
    masks: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    deadline: float | None = None,
) -> FinetuneResult:
    """One process's part of a finetune (all of it, or one rank's under DDP)."""
    world = world or World()
    with determinism(spec) as resolved:
        job = prepare(repo, resolved)
        point = checkpoint if checkpoint is not None else _resume_point(repo, job, resume)
        output = plan_output(repo, job)
        model, head = build_model(job)
        directory = point.directory(repo) if point is not None else None
        source = "given" if masks is not None else None
        fisher: dict[str, Any] | None = None
        if masks is None and directory is not None:
            masks = saved_masks(directory)
            source = "checkpoint" if masks is not None else None
            fisher = _resumed_fisher(repo, point) if masks is not None else None
        given = resolve_masks(model, head, masks) if masks is not None else None
        loop = Loop(job, model, head, world=world, masks=given, device=_device(resolved))
        if directory is not None:
            loop.restore(directory)
        elif resolved.method == "sparse" and given is None:
            chosen, fisher = fishmask(repo, loop, record=world.rank == 0)
            loop.set_masks(chosen)
        if fisher is not None:
            source = "fisher"
        if world.rank:  # dropout differs per rank; rank 0 keeps the single-process stream
            torch.manual_seed(resolved.seed + 1009 * world.rank + loop.position.step)
            loop.run(Silent())
            return FinetuneResult("", "", None, None, None, False, job.base, 0, ())
        config = run_config(job, loop, world, point, source, fisher)
        with start_run(
            resolved.project, repo=repo, config=config, datasets=[job.data.version.ref],
            base_model=job.base, seed=resolved.seed, name=name, tags=tags,
        ) as run:  # fmt: skip
            sink = RunSink(repo, run, job, callback, point, loop.per_epoch, loop.total)
            sink.result_masks = fisher is None  # a FishMask is rebuilt from its Fisher
            sink.deadline = deadline
            position = loop.run(sink)
            return finish(repo, run, job, loop, sink, position, output, point)


@contextmanager
def determinism(spec: FinetuneSpec) -> Iterator[FinetuneSpec]:
    """Deterministic torch with the spec's thread count for the block; yields the spec with
    ``threads`` and ``device`` resolved (what the run records). Torch's settings come back
    after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    resolved = spec.model_copy(
        update={"threads": spec.threads or threads, "device": _device_name(spec.device)}
    )
    torch.set_num_threads(resolved.threads or threads)
    # CUDA kernels without a deterministic version warn instead of failing (no bits promised)
    torch.use_deterministic_algorithms(True, warn_only=resolved.device != "cpu")
    try:
        yield resolved
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _device_name(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidSpec("--device cuda: no CUDA device is available")
    return device


def _device(spec: FinetuneSpec) -> torch.device:
    return torch.device(spec.device)


def prepare(repo: Repository, spec: FinetuneSpec) -> Job:
    """Resolve and check the inputs; nothing is recorded."""
    try:
        name, ref = split_model_ref(spec.base)
    except Exception as exc:  # an invalid name: say which option
        raise InvalidSpec(f"--base {spec.base}: {exc}") from None
    index = repo.view(ModelRefs)
    try:
        commit = index.resolve(name, ref)
    except ModelNotFound:
        raise InvalidSpec(
            f"--base {spec.base}: no registered model {name!r} (commit it first: "
            "`fmforge model commit`)"
        ) from None
    if CommitReader(repo, f"{name}@{commit}").manifest.get("adapter") is not None:
        adapts = index.commit(commit).base or "an unknown base"
        raise InvalidSpec(
            f"--base {spec.base} is an adapter (of {adapts}): finetune its base model"
        )
    data = load_training_data(repo, spec)
    base_dir = open_model(f"{name}@{commit}", repo=repo)
    if not (base_dir / "config.json").is_file():
        raise InvalidSpec(f"--base {spec.base}: no config.json, not a transformers model")
    tokenizer = load_tokenizer(base_dir, spec.task)
    limit = json.loads((base_dir / "config.json").read_text()).get("max_position_embeddings")
    length = (
        min(spec.max_length, limit) if isinstance(limit, int) and limit > 0 else spec.max_length
    )
    return Job(spec, name, commit, base_dir, data, tokenizer, length)


def plan_output(repo: Repository, job: Job) -> tuple[str, str | None]:
    """(model, branch; None: the run's default) where the result goes, checked now."""
    spec = job.spec
    if spec.output:
        model, _, branch = spec.output.partition("@")
        validate_model_name(model)
        if branch:
            validate_ref_name("branch", branch)
    elif spec.method == "lora":
        model, branch = f"{job.base_model}-{job.data.version.dataset}-lora", "main"
        validate_model_name(model)
    else:
        model, branch = job.base_model, ""
    index = repo.view(ModelRefs)
    if model not in index.models():
        return model, branch or None
    head = index.commit(index.resolve(model, index.default_branch(model) or "main"))
    adapts = head.base.partition("@")[0] if head.base else None
    if spec.method == "lora" and adapts != job.base_model:
        what = f"adapters of {adapts}" if adapts else "full models"
        raise InvalidSpec(
            f"--output {model}: that model holds {what}, not adapters of {job.base_model}"
        )
    if spec.method != "lora" and adapts is not None:
        raise InvalidSpec(f"--output {model}: that model holds adapters, not full models")
    return model, branch or None


def _resumed_fisher(repo: Repository, point: resuming.Checkpoint | None) -> dict[str, Any] | None:
    """The Fisher the run resumed from chose its FishMask from (None: its mask was given)."""
    if point is None:
        return None
    from fmforge.tracking.reading import load_run

    recorded = (load_run(repo, point.run).config.get("mask") or {}).get("fisher")
    return dict(recorded) if isinstance(recorded, dict) else None


def _resume_point(repo: Repository, job: Job, resume: str | None) -> resuming.Checkpoint | None:
    if resume is None:
        return None
    if resume == "auto":
        return resuming.automatic(repo, job.spec, job.base_commit, job.data.version.id)
    return resuming.explicit(repo, resume, job.spec)
