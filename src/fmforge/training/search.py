"""``finetune --auto``: a budgeted hyperparameter search, every trial a tracked finetune run.

    result = search(repo, FinetuneSpec(base="minilm", data="youtube", eval_split="valid"),
                    SearchSpec(trials=12, wall="30m", trial_wall="5m"))
    result.best                          # the best trial: its run, parameters, objective, commit

The sampler is Optuna's (TPE after ``startup_trials`` random ones, or random throughout,
seeded) over ``space``: ranges (``lr=1e-5:1e-3``, logarithmic for learning rates and decays;
``epochs=1:3``, integers) or choices (``batch_size=8|16``) of ``FinetuneSpec`` fields; by
default the learning rate around the method's default. Pruning is single-bracket asynchronous
successive halving (ASHA, Optuna's ``SuccessiveHalvingPruner``): every trial evaluates its
eval split every ``min_steps`` training steps (the rungs are ``min_steps * eta^k``) and stops
at a rung unless its objective is in the top ``1/eta`` of the trials that reached it (the first
trial at a rung goes on only if it is the best there so far).

Budgets, all global (the whole search, not per worker or process) and enforced:

- ``trials``: no trial starts after the last one allowed;
- ``wall``: no trial starts after it, and a running trial is interrupted at the first training
  step past it;
- ``trial_wall``: a trial is interrupted at the first step past its own limit.

An interrupted trial commits no result: its run is tagged ``fmforge.stopped`` ("by its
wall-time budget") and the search records it as ``interrupted`` (Optuna: pruned, with its last
evaluation). Preparing a trial (loading the model, computing a FishMask) is not interruptible,
so a budget can be overrun by that much.

Recorded on ``search/<id>`` (``fmforge.training.events``): ``SearchStarted``, one
``TrialFinished`` per trial, ``SearchFinished``; the best complete trial's commit is tagged
``auto/<id>/best`` on its model. Trials are runs named ``auto-<id>-<n>`` tagged ``auto`` and
``search/<id>``; an ``auto`` run never resumes another.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fmforge.errors import FmforgeError, InvalidSpec
from fmforge.repository import Repository
from fmforge.training.events import SearchFinished, SearchStarted, TrialFinished
from fmforge.training.spec import DEFAULT_LR, FinetuneSpec, describe

SEARCHABLE: dict[str, type] = {
    "lr": float, "epochs": int, "batch_size": int, "warmup_ratio": float,
    "weight_decay": float, "r": int, "alpha": int, "dropout": float, "keep": float,
    "max_grad_norm": float,
}  # fmt: skip
LOG_SCALE = {"lr", "weight_decay", "keep"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Any) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration (90s, 30m, 2h)")
        number = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return number


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None
        assert self.high is not None
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def parse_dimension(text: str) -> Dimension:
    """``lr=1e-5:1e-3`` (a range), ``batch_size=8|16|32`` (choices)."""
    name, sep, body = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not body.strip():
        raise ValueError(f"{text!r}: NAME=LOW:HIGH or NAME=A|B|C")
    kind = SEARCHABLE.get(name)
    if kind is None:
        raise ValueError(f"{text!r}: {name} cannot be searched (use {', '.join(SEARCHABLE)})")

    def number(part: str) -> Any:
        try:
            value = kind(float(part)) if kind is int and float(part).is_integer() else kind(part)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{text!r}: {part.strip()!r} is not {what}") from None
        return value

    if "|" in body:
        choices = tuple(dict.fromkeys(number(p.strip()) for p in body.split("|")))
        return Dimension(name, choices=choices)
    low_text, colon, high_text = body.partition(":")
    if not colon:
        raise ValueError(f"{text!r}: NAME=LOW:HIGH or NAME=A|B|C")
    low, high = number(low_text.strip()), number(high_text.strip())
    if not low < high:
        raise ValueError(f"{text!r}: LOW must be below HIGH")
    log = name in LOG_SCALE
    if log and low <= 0:
        raise ValueError(f"{text!r}: {name} is searched on a log scale: LOW must be positive")
    return Dimension(name, float(low), float(high), log=log, integer=kind is int)


class SearchSpec(BaseModel):
    """How a search runs: budgets, pruner, sampler, space. Descriptions are the CLI's help."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trials: Annotated[int, Field(ge=1, le=100_000)] = Field(
        12, description="Most trials the search starts."
    )
    wall: float = Field(
        3600.0,
        description="Wall time of the whole search (90s, 30m, 2h): no trial starts after it "
        "and a running one is interrupted.",
        json_schema_extra={"cli_text": True},
    )
    trial_wall: float | None = Field(
        None,
        description="Wall time of one trial, interrupted past it (default: the search's).",
        json_schema_extra={"cli_text": True},
    )
    eta: Annotated[int, Field(ge=2, le=100)] = Field(
        3, description="ASHA's reduction factor: a trial goes on past a rung if in the top 1/eta."
    )
    min_steps: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="ASHA's first rung, in training steps; trials evaluate every min_steps "
        "(default: a trial's steps / eta^2).",
    )
    startup_trials: Annotated[int, Field(ge=0)] = Field(
        4, description="Random trials before TPE takes over."
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="tpe or random.")
    space: tuple[str, ...] | None = Field(
        None,
        description="Parameters searched, NAME=LOW:HIGH or NAME=A|B|C, repeatable (default: "
        "lr around the method's default).",
    )
    search_seed: Annotated[int, Field(ge=0, lt=2**32)] = Field(
        0, description="Seed of the sampler."
    )

    @field_validator("wall", "trial_wall", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else seconds(value)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else list(value)
        parts = [p.strip() for item in items for p in re.split(r",(?=\s*[a-z_-]+=)", str(item))]
        for part in parts:
            parse_dimension(part)
        names = [part.partition("=")[0].strip().replace("-", "_") for part in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"a parameter is given twice: {', '.join(names)}")
        return tuple(parts)

    @classmethod
    def parse(cls, values: dict[str, Any]) -> SearchSpec:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InvalidSpec(describe(exc).replace("finetune spec", "search")) from None

    def dimensions(self, spec: FinetuneSpec) -> list[Dimension]:
        """The space, checked against ``spec`` (each value a valid option of its method)."""
        if self.space is not None:
            found = [parse_dimension(p) for p in self.space]
        else:
            centre = DEFAULT_LR[spec.method]
            found = [Dimension("lr", centre / 5, centre * 5, log=True)]
        for dimension in found:
            values = dimension.choices or (dimension.low, dimension.high)
            for value in values:
                if dimension.integer and not dimension.choices:
                    value = int(value)
                try:
                    spec.replace(**{dimension.name: value})
                except InvalidSpec as exc:
                    raise InvalidSpec(
                        f"--space {dimension.name}: {value!r} does not fit this finetune: "
                        f"{str(exc).removeprefix('finetune spec: ')}"
                    ) from None
        return found


@dataclass(frozen=True)
class Trial:
    number: int
    run: str | None
    state: str  # complete | pruned | interrupted | failed
    params: dict[str, Any]
    value: float | None
    steps: int
    seconds: float
    commit: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.number, "run": self.run, "state": self.state, "params": self.params,
            "value": self.value, "steps": self.steps, "seconds": round(self.seconds, 3),
            "commit": self.commit, "reason": self.reason,
        }  # fmt: skip


@dataclass
class SearchResult:
    search: str
    objective: str
    direction: str
    trials: list[Trial] = field(default_factory=list)
    stopped_by: str = "trials"
    seconds: float = 0.0
    tag: str | None = None

    @property
    def steps(self) -> int:
        return sum(t.steps for t in self.trials)

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        if not done:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(done, key=lambda t: (sign * float(t.value or 0.0), -t.number))

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "search": self.search, "objective": self.objective, "direction": self.direction,
            "trials": [t.to_json() for t in self.trials], "stopped_by": self.stopped_by,
            "steps": self.steps, "seconds": round(self.seconds, 3),
            "best": best.to_json() if best else None, "tag": self.tag,
        }  # fmt: skip


def search(
    repo: Repository,
    spec: FinetuneSpec,
    budget: SearchSpec,
    *,
    on_trial: Any = None,
) -> SearchResult:
    """Search ``budget.space`` for the best ``spec`` variant; see the module docstring.
    ``on_trial(trial)`` is called after each trial (the CLI prints it)."""
    import optuna

    from fmforge.training.finetuning import determinism, finetune, prepare

    if spec.eval_split is None:
        raise InvalidSpec("--auto needs --eval-split: the objective is measured on it")
    dimensions = budget.dimensions(spec)
    with determinism(spec) as resolved:
        job = prepare(repo, resolved)  # refused here, before anything is recorded
    per_epoch = math.ceil(len(job.data.train) / spec.batch_size)
    planned = min(spec.max_steps or 2**62, spec.epochs * per_epoch)
    min_steps = budget.min_steps or max(1, planned // budget.eta**2)
    objective = f"eval_{spec.objective}"
    direction: Literal["minimize", "maximize"] = (
        "minimize" if spec.objective == "perplexity" else "maximize"
    )
    started = time.monotonic()
    deadline = started + budget.wall
    search_id = secrets.token_hex(8)
    stream = f"search/{search_id}"
    sampler: Any = (
        optuna.samplers.RandomSampler(seed=budget.search_seed)
        if budget.sampler == "random"
        else optuna.samplers.TPESampler(
            seed=budget.search_seed, n_startup_trials=budget.startup_trials
        )
    )
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_steps, reduction_factor=budget.eta
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    repo.record(stream, SearchStarted({
        "search": search_id, "spec": spec.model_dump(mode="json"),
        "space": {d.name: d.to_json() for d in dimensions},
        "budget": {"trials": budget.trials, "wall_s": budget.wall,
                   "trial_wall_s": budget.trial_wall},
        "pruner": {"kind": "asha", "eta": budget.eta, "min_steps": min_steps},
        "sampler": {"kind": budget.sampler, "seed": budget.search_seed,
                    "startup_trials": budget.startup_trials},
        "objective": objective, "direction": direction,
    }))  # fmt: skip
    result = SearchResult(search_id, objective, direction)
    for number in range(budget.trials):
        if time.monotonic() >= deadline:
            result.stopped_by = "wall"
            break
        trial = study.ask()
        params = {d.name: d.suggest(trial) for d in dimensions}
        variant = spec.replace(**params, eval_steps=min_steps)
        limit = deadline
        if budget.trial_wall is not None:
            limit = min(deadline, time.monotonic() + budget.trial_wall)
        outcome = _run_trial(repo, variant, trial, number, search_id, limit, finetune, optuna)
        result.trials.append(outcome)
        _tell(study, trial, outcome, optuna)
        payload: dict[str, Any] = {"search": search_id, **outcome.to_json()}
        repo.record(stream, TrialFinished(payload))  # type: ignore[arg-type]
        if on_trial is not None:
            on_trial(outcome)
        if outcome.state == "interrupted" and time.monotonic() >= deadline:
            result.stopped_by = "wall"
            break
    result.seconds = time.monotonic() - started
    best = result.best
    if best is not None and best.commit is not None:
        from fmforge.models.branches import create_tag

        model, _, commit = best.commit.partition("@")
        result.tag = f"auto/{search_id}/best"
        create_tag(repo, model, result.tag, commit)
    repo.record(stream, SearchFinished({
        "search": search_id, "trials": len(result.trials), "stopped_by": result.stopped_by,
        "steps": result.steps, "seconds": result.seconds,
        "best": best.to_json() if best else None, "tag": result.tag,
    }))  # fmt: skip
    return result


def _run_trial(
    repo: Repository, variant: FinetuneSpec, trial: Any, number: int, search_id: str,
    limit: float, finetune: Any, optuna: Any,
) -> Trial:  # fmt: skip
    params = dict(trial.params)
    last: list[float] = []
    started = time.monotonic()

    def report(progress: Any) -> bool:
        if progress.objective is None or not math.isfinite(progress.objective):
            return False
        last.append(float(progress.objective))
        trial.report(float(progress.objective), progress.step)
        return bool(trial.should_prune())

    try:
        done = finetune(
            repo, variant, resume=None, callback=report, name=f"auto-{search_id[:8]}-{number}",
            tags=("auto", f"search/{search_id}"), deadline=limit,
        )  # fmt: skip
    except FmforgeError as exc:
        return Trial(number, None, "failed", params, None, 0, time.monotonic() - started,
                     reason=str(exc).splitlines()[0][:500])  # fmt: skip
    seconds_used = time.monotonic() - started
    value = last[-1] if last else None
    if done.interrupted:
        return Trial(number, done.run, "interrupted", params, value, done.steps, seconds_used,
                     reason=f"wall-time budget at step {done.steps}")  # fmt: skip
    if done.stopped:
        return Trial(number, done.run, "pruned", params, value, done.steps, seconds_used,
                     reason=f"pruned by ASHA at step {done.steps}")  # fmt: skip
    final = done.metrics.get(f"eval_{variant.objective}", value)
    return Trial(number, done.run, "complete", params, final, done.steps, seconds_used,
                 commit=done.commit_ref)  # fmt: skip


def _tell(study: Any, trial: Any, outcome: Trial, optuna: Any) -> None:
    states = optuna.trial.TrialState
    if outcome.state == "complete" and outcome.value is not None:
        study.tell(trial, outcome.value)
    elif outcome.state in ("pruned", "interrupted"):
        study.tell(trial, state=states.PRUNED)
    else:
        study.tell(trial, state=states.FAIL)


__all__ = ["Dimension", "SearchResult", "SearchSpec", "Trial", "parse_dimension", "search",
           "seconds"]  # fmt: skip
