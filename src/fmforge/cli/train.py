"""``fmforge finetune``, ``eval``, ``fisher`` and ``model select``: thin over ``fmforge.training``.

Every option of ``finetune`` but the execution ones (``--auto``, ``--nproc``, ``--resume``,
``--no-resume``, ``--name``, ``--json``) is a field of ``FinetuneSpec``, or with ``--auto`` of
``SearchSpec`` (see ``fmforge.cli.specs``).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from fmforge.access.mediation import purpose as using_for
from fmforge.cli.context import console, open_repository
from fmforge.cli.specs import spec_options
from fmforge.errors import UsageError
from fmforge.training.search import SearchSpec
from fmforge.training.spec import FinetuneSpec, option

EXECUTION_OPTIONS = ("auto", "nproc", "resume", "no_resume", "name", "purpose", "as_json")

_PURPOSE = (
    "What the model and data are used for (commercial, research, ...): licences and consent "
    "are checked for it when access control is on."
)


@spec_options(SearchSpec, into="search_values")
@spec_options(FinetuneSpec)
def finetune(
    ctx: typer.Context,
    spec_values: dict[str, Any],
    search_values: dict[str, Any],
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Search hyperparameters (Optuna, ASHA pruning) within --trials, --wall and "
            "--trial-wall; every trial a run; the best commit tagged auto/SEARCH/best.",
        ),
    ] = False,
    nproc: Annotated[
        int, typer.Option(min=1, help="Processes: more than 1 runs the job under torchrun (DDP).")
    ] = 1,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN",
            help="Go on from RUN's last checkpoint (RUN's spec when no --base/--data is given; "
            "default: a crashed run of the same spec, if any).",
        ),
    ] = None,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Start afresh even if a run of this spec crashed.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="The run's name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
    purpose: Annotated[str | None, typer.Option(help=_PURPOSE)] = None,
) -> None:
    """Finetune a registered model on a dataset version (LoRA, full or sparse), tracked as a
    run: checkpoints are commits on runs/RUN of the base model, the result a commit evaluated on
    the eval and test splits."""
    from fmforge.training.finetuning import finetune as run_finetune
    from fmforge.training.resume import recorded_spec

    if resume and no_resume:
        raise UsageError("--resume and --no-resume contradict each other")
    if search_values and not auto:
        given = ", ".join(option(k) for k in search_values)
        raise UsageError(f"{given} applies to --auto only")
    if auto:
        if resume or nproc > 1:
            raise UsageError("--auto runs fresh single-process trials: no --resume or --nproc")
        _auto(ctx, FinetuneSpec.parse(spec_values), SearchSpec.parse(search_values), as_json)
        return
    with open_repository(ctx) as repo:
        if resume and "base" not in spec_values and "data" not in spec_values:
            from fmforge.tracking.views import RunsView

            index = repo.view(RunsView)
            recorded = recorded_spec(index.run(index.resolve(resume)))
            spec = FinetuneSpec.parse({**recorded.model_dump(), **spec_values})
            spec = spec.model_copy(update={"threads": recorded.threads, "device": recorded.device})
        else:
            spec = FinetuneSpec.parse(spec_values)
        printer = None if as_json or nproc > 1 else _progress
        with using_for(purpose):
            result = run_finetune(
                repo, spec, resume=resume or (None if no_resume else "auto"), nproc=nproc,
                name=name, callback=printer,
            )  # fmt: skip
    if as_json:
        typer.echo(orjson.dumps(result.to_json()))
        return
    resumed = result.resumed_from
    if resumed:
        console.print(
            f"resumed run {resumed['run'][-12:]} from its checkpoint at step {resumed['step']}",
            markup=False,
        )
    named = (
        result.run_name
        if result.run_name == result.run[-12:]
        else (f"{result.run_name} ({result.run[-12:]})")
    )
    console.print(
        f"run {named}, project {spec.project}: "
        f"{result.steps} steps, {len(result.checkpoints)} checkpoint(s) on "
        f"{result.base.partition('@')[0]}@runs/{result.run}",
        markup=False,
    )
    if result.stopped:
        console.print("stopped before the end: no result committed", markup=False)
        return
    kind = f"adapter of {_short(result.base)}" if result.adapter else f"from {_short(result.base)}"
    console.print(
        f"committed {result.model}@{result.branch} {str(result.commit)[:12]} ({kind})",
        markup=False,
    )
    for label, evaluation in zip(_kinds(result), result.evaluations, strict=True):
        values = "  ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items())
        where = f"{evaluation.dataset}:{evaluation.split}"
        console.print(f"{label:5} {where}  {values} ({evaluation.rows} rows)", markup=False)


def _auto(ctx: typer.Context, spec: FinetuneSpec, budget: SearchSpec, as_json: bool) -> None:
    from fmforge.training.search import search

    def shown(trial: Any) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        params = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in trial.params.items())  # fmt: skip
        console.print(
            f"trial {trial.number}: {trial.state:11} {value:>7}  {trial.steps} steps  {params}"
            + (f"  ({trial.reason})" if trial.reason and trial.state != "complete" else ""),
            markup=False,
        )

    with open_repository(ctx) as repo:
        result = search(repo, spec, budget, on_trial=None if as_json else shown)
    if as_json:
        typer.echo(orjson.dumps(result.to_json()))
        return
    best = result.best
    console.print(
        f"search {result.search}: {len(result.trials)} trials, {result.steps} steps, "
        f"{result.seconds:.0f} s (stopped by {result.stopped_by})",
        markup=False,
    )
    if best is None:
        console.print("no trial completed: nothing tagged", markup=False)
        return
    console.print(
        f"best: trial {best.number}, {result.objective} {best.value:.4f}, "
        f"{best.commit} tagged {result.tag}",
        markup=False,
    )


def _kinds(result: Any) -> list[str]:
    return [k for k in ("eval", "test") if any(m.startswith(k + "_") for m in result.metrics)]


def _progress(progress: Any) -> None:
    values = "  ".join(f"{k} {v:.4f}" for k, v in sorted(progress.metrics.items()))
    console.print(f"step {progress.step} (epoch {progress.epoch:.2f})  {values}", markup=False)


def _short(ref: str) -> str:
    name, _, commit = ref.partition("@")
    return f"{name}@{commit[:12]}"


def eval_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="MODEL@REF", help="The commit to evaluate.")],
    data: Annotated[
        str,
        typer.Option(
            metavar="DATASET@REF[:SPLIT]",
            help="The dataset version, and the value of its split column to evaluate (default: "
            "every row).",
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="accuracy, macro_f1 (classification) or perplexity (causal-lm); repeatable "
            "(default: accuracy, or perplexity)."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="classification or causal-lm (default: what the model was made for)."),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="The text column (default: the one trained on).")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(help="The gold label column (default: the one trained on, else label)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per forward pass.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="The evaluation as JSON.")] = False,
    purpose: Annotated[str | None, typer.Option(help=_PURPOSE)] = None,
) -> None:
    """Evaluate a model commit on a dataset split; recorded on the commit (`CommitEvaluated`),
    shown by `model show` and `model log`."""
    from fmforge.training.evaluation import evaluate

    reference, _, split = data.partition(":")
    metrics = [part.strip() for item in metric or [] for part in item.split(",") if part.strip()]
    if task is not None and task not in ("classification", "causal-lm"):
        raise UsageError(f"--task {task}: use classification or causal-lm")
    with open_repository(ctx) as repo, using_for(purpose):
        result = evaluate(
            repo, target, reference, split=split or None, metrics=metrics or None, task=task,
            text_column=text_column, label_column=label_column, batch_size=batch_size,
        )  # fmt: skip
    if as_json:
        typer.echo(orjson.dumps(result.to_json()))
        return
    values = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    where = result.dataset + (f":{result.split}" if result.split else "")
    console.print(
        f"{result.model}@{result.commit[:12]} on {where} ({result.rows} rows): {values}",
        markup=False,
    )


def fisher(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="MODEL@REF", help="The commit to measure.")],
    data: Annotated[
        str,
        typer.Option(
            metavar="DATASET@REF[:SPLIT]",
            help="The dataset version, and the value of its split column (default: every row).",
        ),
    ],
    examples: Annotated[
        int, typer.Option(help="Examples drawn (a seeded sample of the rows).")
    ] = 256,
    task: Annotated[
        str | None,
        typer.Option(
            help="classification or causal-lm: needed for a base without a head (a head is "
            "initialised from --seed, as finetune does); default: what the model was made for."
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="empirical (the data's labels) or true (expected under the model's own "
            "predictions)."
        ),
    ] = "empirical",
    seed: Annotated[int, typer.Option(help="Seed of the examples' order (and a new head).")] = 0,
    text_column: Annotated[
        str | None, typer.Option(help="The text column (default: the one trained on, or text).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="The gold label column.")] = "label",
    max_length: Annotated[
        int | None, typer.Option(help="Tokens per example (default: the model's, or 128).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (the bits depend on it).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
) -> None:
    """The diagonal Fisher of a model commit on a dataset version (per-example squared
    gradients of the log-likelihood, averaged), stored as a safetensors object with the model's
    tensor names and recorded as FisherComputed on the commit: what FishMask and
    Fisher-weighted merging read."""
    from fmforge.training.fisher import compute_fisher, describe

    reference, _, split = data.partition(":")
    with open_repository(ctx) as repo:
        result = compute_fisher(
            repo, target, reference, split=split or None, examples=examples, task=task,
            kind=kind, seed=seed, text_column=text_column, label_column=label_column,
            max_length=max_length, threads=threads,
        )  # fmt: skip
    if as_json:
        typer.echo(orjson.dumps(result.to_json()))
        return
    console.print(describe(result), markup=False)


def select(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Option(
            metavar="DATASET@REF[:SPLIT]",
            help="The labelled task: a dataset version and the value of its split column "
            "(default: every row).",
        ),
    ],
    candidates: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MODEL@REF",
            help="Models to rank, repeatable (default: the head of every branch of every "
            "model that loads as a text encoder or language model).",
        ),
    ] = None,
    examples: Annotated[int, typer.Option(help="Rows embedded (a seeded sample).")] = 512,
    folds: Annotated[int, typer.Option(help="Folds of the linear probe.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the folds.")] = 0,
    max_length: Annotated[int, typer.Option(min=1, help="Tokens per row.")] = 128,
    text_column: Annotated[str, typer.Option(help="The text column.")] = "text",
    label_column: Annotated[str, typer.Option(help="The gold label column.")] = "label",
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads (default: torch's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The selection as JSON.")] = False,
) -> None:
    """Rank candidate models for a labelled task by LogME on frozen features, cross-checked by a
    k-fold linear probe; recorded as ModelSelected with every score and the rank agreement."""
    from fmforge.training.selection import select_model

    reference, _, split = data.partition(":")
    names = [p.strip() for item in candidates or [] for p in item.split(",") if p.strip()]
    with open_repository(ctx) as repo:
        result = select_model(
            repo, reference, candidates=names or None, split=split or None,
            examples=examples, folds=folds, seed=seed, max_length=max_length,
            text_column=text_column, label_column=label_column, threads=threads,
        )  # fmt: skip
    if as_json:
        typer.echo(orjson.dumps(result.to_json()))
        return
    table = Table(title=f"model selection {result.selection} on {result.dataset} "
                        f"({result.examples} rows)")  # fmt: skip
    for column in ("rank", "model", "LogME", f"probe ({result.folds}-fold)", "probe rank"):
        table.add_column(column)
    probe_rank = {m: i + 1 for i, m in enumerate(result.probe_ranking)}
    by_model = {c.model: c for c in result.candidates}
    for rank, model in enumerate(result.logme_ranking, start=1):
        c = by_model[model]
        table.add_row(str(rank), _short(model), f"{c.logme:.4f}", f"{c.probe:.4f}",
                      str(probe_rank[model]))  # fmt: skip
    console.print(table)
    tau = result.kendall_tau
    console.print(
        f"pick: {_short(result.pick)}; LogME vs probe Kendall tau "
        f"{'-' if tau is None else f'{tau:.3f}'}",
        markup=False,
    )
    for target, why in result.skipped:
        console.print(f"skipped {_short(target)}: {why}", markup=False)
