"""``fmforge finetune`` and ``fmforge eval``: thin over ``fmforge.training``.

Every option of ``finetune`` but the execution ones (``--nproc``, ``--resume``, ``--no-resume``,
``--name``, ``--json``) is a field of ``FinetuneSpec`` (see ``fmforge.cli.specs``).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from fmforge.access.mediation import purpose as using_for
from fmforge.cli.context import console, open_repository
from fmforge.cli.specs import spec_options
from fmforge.errors import UsageError
from fmforge.training.spec import FinetuneSpec

EXECUTION_OPTIONS = ("nproc", "resume", "no_resume", "name", "as_json")

_PURPOSE = (
    "What the model and data are used for (commercial, research, ...): licences and consent "
    "are checked for it when access control is on."
)


@spec_options(FinetuneSpec)
def finetune(
    ctx: typer.Context,
    spec_values: dict[str, Any],
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
    label_column: Annotated[str, typer.Option(help="The gold label column.")] = "label",
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
