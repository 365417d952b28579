"""``fmforge model merge`` and ``fmforge model rebase``: thin over ``fmforge.merging``.

The merge options are ``MergeSpec``'s fields (their help is the fields' descriptions):
``SPEC_OPTIONS`` maps each field to its option, and a test keeps the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from fmforge.cli.context import console, open_repository
from fmforge.errors import InvalidMerge
from fmforge.merging.base import MergeInput, MergeSpec

# MergeSpec field -> the command-line option that sets it
SPEC_OPTIONS = {
    "method": "--method", "inputs": "INPUT@REF... and --weights", "base": "--base",
    "lambda_": "--lambda", "density": "--density", "seed": "--seed", "t": "--t",
    "normalize": "--normalize/--no-normalize", "compute_dtype": "--compute-dtype",
    "output": "--as-adapter", "rank": "--rank",
}  # fmt: skip


def _help(field: str) -> str:
    return MergeSpec.model_fields[field].description or ""


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
    app.command("rebase")(rebase_command)


def merge_command(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="INPUT@REF...", help=MergeInput.model_fields["model"].description),
    ],
    method: Annotated[str, typer.Option(help=_help("method"))],
    base: Annotated[str | None, typer.Option(metavar="NAME@REF", help=_help("base"))] = None,
    weights: Annotated[
        str | None,
        typer.Option(metavar="W,W,...", help="One weight per input, comma-separated (default 1)."),
    ] = None,
    lambda_: Annotated[float | None, typer.Option("--lambda", help=_help("lambda_"))] = None,
    density: Annotated[float | None, typer.Option(help=_help("density"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    t: Annotated[float | None, typer.Option("--t", help=_help("t"))] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help=_help("normalize"))
    ] = None,
    compute_dtype: Annotated[
        str | None, typer.Option(metavar="float32|float64", help=_help("compute_dtype"))
    ] = None,
    as_adapter: Annotated[
        bool,
        typer.Option(
            "--as-adapter",
            help="Write a LoRA adapter re-factored by SVD (reporting its reconstruction error) "
            "instead of a full model.",
        ),
    ] = False,
    rank: Annotated[int | None, typer.Option(help=_help("rank"))] = None,
    output: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Model to commit to (default: the base's model)."),
    ] = None,
    branch: Annotated[str | None, typer.Option(help="Branch (default: merge/METHOD).")] = None,
    message: Annotated[str | None, typer.Option("-m", "--message")] = None,
    top: Annotated[int, typer.Option(help="Print this many of the most conflicted tensors.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="The commit and the whole report.")] = (
        False
    ),
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Choose --lambda (and --density for ties and dare_*) by the mean score on the "
            "inputs' dev splits; report each task's score as a share of its finetune's and the "
            "share of the gain over lambda=0 kept.",
        ),
    ] = False,
    dev: Annotated[
        list[str] | None,
        typer.Option(
            metavar="INPUT=DATASET@REF[:SPLIT]",
            help="--auto: the data an input is scored on (default: the split its finetune was "
            "evaluated on, test splits aside).",
        ),
    ] = None,
    lambdas: Annotated[
        str | None, typer.Option(metavar="L,L,...", help="--auto: the lambdas tried.")
    ] = None,
    densities: Annotated[
        str | None, typer.Option(metavar="D,D,...", help="--auto: the densities tried.")
    ] = None,
) -> None:
    """Merge models or adapters into a new commit, and print the most conflicted tensors.

    Task vectors are taken from --base (adapters: their recorded base); adapters are combined
    exactly as their updates (alpha/r)·B·A, never factor by factor.
    """
    if not auto and (dev or lambdas or densities):
        option = "--dev" if dev else "--lambdas" if lambdas else "--densities"
        raise InvalidMerge(f"{option} is an option of --auto")
    if auto and (lambda_ is not None or density is not None):
        raise InvalidMerge("--auto chooses --lambda and --density: give --lambdas/--densities")
    given: dict[str, Any] = {
        "base": base, "lambda": lambda_, "density": density, "seed": seed, "t": t,
        "normalize": normalize, "compute_dtype": compute_dtype, "rank": rank,
    }  # fmt: skip
    parameters = {k: v for k, v in given.items() if v is not None}
    if as_adapter:
        parameters["output"] = "adapter"
    spec = MergeSpec.build(method, inputs, weights=_weights(weights), **parameters)
    from fmforge.merging.base import merge  # torch loads here, not for every command

    found = None
    with open_repository(ctx) as repo:
        if auto:
            from fmforge.merging.auto import DENSITIES, LAMBDAS
            from fmforge.merging.tasks import auto_merge

            result, found = auto_merge(
                repo, spec, dev=_dev(dev or []), name=output, branch=branch, message=message,
                lambdas=_numbers(lambdas, "--lambdas") or LAMBDAS,
                densities=_numbers(densities, "--densities") or DENSITIES,
            )  # fmt: skip
        else:
            result = merge(repo, spec, name=output, branch=branch, message=message)
    commit = result.commit
    if as_json:
        record = {
            "model": commit.model, "branch": commit.branch, "commit": commit.commit,
            "parents": list(commit.parents), "report_object": result.report_object,
            "report": result.report, "provenance": result.provenance,
        }  # fmt: skip
        typer.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2))
        return
    summary = result.report["summary"]
    console.print(
        f"[{commit.model} {commit.branch} {commit.commit[:12]}] {result.provenance['kind']} "
        f"{spec.method} of {len(spec.inputs)} input(s)\n"
        f"  {summary['changed']} tensors merged, {summary['unchanged']} unchanged; stored "
        f"{commit.stored_bytes:,} new bytes for {commit.raw_bytes:,} bytes of files\n"
        f"  conflict report: object {result.report_object} "
        f"(overlap {summary['overlap']:.3f}, sign conflict {summary['sign_conflict']:.3f}, "
        f"mass dropped by a sign election {summary['conflict']:.3f})",
        markup=False,
    )
    if result.reconstruction is not None:
        console.print(
            f"  adapter of rank {result.reconstruction['rank']}: relative reconstruction "
            f"error {result.reconstruction['relative_error']:.3g}",
            markup=False,
        )
    if result.not_merged:
        console.print(
            f"  not merged (no such tensor in the base): {', '.join(result.not_merged[:5])}"
            + (f" and {len(result.not_merged) - 5} more" if len(result.not_merged) > 5 else ""),
            markup=False,
        )
    if found is not None:
        _auto_table(result.provenance["auto"])
    _conflict_table(result.report, top, ("norms", "min cos", "overlap", "sign conflict",
                                          "dropped"))  # fmt: skip


def _auto_table(summary: dict[str, Any]) -> None:
    density = f", density {summary['density']:g}" if summary["density"] != 1.0 else ""
    console.print(
        f"  --auto: lambda {summary['lambda']:g}{density} chosen of {len(summary['trials'])} "
        f"candidates; share of single-task score {summary['mean_normalized']:.1%}, of the gain "
        f"over lambda=0 kept {summary['mean_gain_kept']:.1%}",
        markup=False,
    )
    for task in summary["tasks"]:
        name = task["name"]
        console.print(
            f"    {name}  {task['metric']} {summary['scores'][name]:.4f} on {task['data']}:"
            f"{task['split']}  (finetune {summary['single'][name]:.4f}, lambda=0 "
            f"{summary['floor'][name]:.4f}; share {summary['normalized'][name]:.1%}, gain kept "
            f"{summary['gain_kept'][name]:.1%})",
            markup=False,
        )


def _dev(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, data = item.partition("=")
        if not sep or not name or not data:
            raise InvalidMerge(f"--dev {item!r}: expected INPUT=DATASET@REF[:SPLIT]")
        out[name] = data
    return out


def _numbers(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidMerge(f"{option} {text!r}: expected numbers separated by commas") from None


def _weights(text: str | None) -> list[float] | None:
    return _numbers(text, "--weights")


def _conflict_table(report: dict[str, Any], top: int, columns: tuple[str, ...]) -> None:
    """The most conflicted tensors, one line each with the name whole (tensor names are long:
    a table would wrap them), highest ``conflict`` first."""
    from fmforge.merging.conflicts import most_conflicted

    worst = most_conflicted(report, top)
    if not worst or top <= 0:
        return
    console.print(
        "most conflicted tensors (conflict: the mean share of kept mass a sign election drops):",
        markup=False,
    )
    width = max(len(record["name"]) for record in worst)
    for record in worst:
        cosines = [
            c for i, row in enumerate(record["cosine"]) for j, c in enumerate(row)
            if i < j and c is not None
        ]  # fmt: skip
        cells = {
            "norms": "norms " + " ".join(f"{n:.3g}" for n in record["norms"]),
            "min cos": f"min cos {min(cosines):.3f}" if cosines else "",
            "cos": f"cos {cosines[0]:.3f}" if cosines else "",
            "overlap": f"overlap {record['overlap']:.3f}",
            "sign conflict": f"sign conflict {record['sign_conflict']:.3f}",
            "dropped": "dropped " + " ".join(f"{d:.3f}" for d in record["dropped"]),
        }
        parts = [cells[c] for c in columns if cells[c]]
        console.print(
            f"  {record['conflict']:.3f}  {record['name']:<{width}}  " + "  ".join(parts),
            markup=False,
        )


def rebase_command(
    ctx: typer.Context,
    finetune: Annotated[str, typer.Argument(metavar="FINETUNE@REF", help="A finetune or adapter.")],
    onto: Annotated[str, typer.Option(metavar="NEWBASE@REF", help="The updated base.")],
    old_base: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="OLDBASE@REF",
            help="The base the finetune started from (default: the adapter's recorded base, "
            "or the commit both descend from).",
        ),
    ] = None,
    branch: Annotated[
        str | None, typer.Option(help="Branch of the result (default: the finetune's).")
    ] = None,
    message: Annotated[str | None, typer.Option("-m", "--message")] = None,
    top: Annotated[int, typer.Option(help="Print this many of the most conflicted tensors.")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-apply a finetune's task vector (or an adapter) to an updated base, check it against
    the base's update, re-run its recorded evaluations, and commit with both parents."""
    from fmforge.merging.rebase import rebase

    with open_repository(ctx) as repo:
        result = rebase(repo, finetune, onto, old_base=old_base, branch=branch, message=message)
    commit = result.commit
    if as_json:
        record = {
            "model": commit.model, "branch": commit.branch, "commit": commit.commit,
            "parents": list(commit.parents), "kind": result.kind, "from": result.old_base,
            "onto": result.new_base, "report_object": result.report_object,
            "report": result.report, "evaluations": result.evaluations,
            "not_evaluated": result.not_evaluated,
        }  # fmt: skip
        typer.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2))
        return
    summary = result.report["summary"]
    console.print(
        f"[{commit.model} {commit.branch} {commit.commit[:12]}] rebased {result.kind} "
        f"{result.finetune.split('@')[0]} from {_short(result.old_base)} onto "
        f"{_short(result.new_base)}\n"
        f"  {summary['changed']} tensors changed by the finetune or the base update; where "
        f"both change an entry, their signs differ in {summary['sign_conflict']:.3f}\n"
        f"  conflict report: object {result.report_object}",
        markup=False,
    )
    _conflict_table(result.report, top, ("norms", "cos", "overlap", "sign conflict"))
    for evaluation in result.evaluations:
        console.print(
            f"  {evaluation['dataset']} ({evaluation['split'] or 'all rows'}): "
            f"{evaluation['before']} -> {evaluation['after']}",
            markup=False,
        )
    if result.not_evaluated:
        console.print(f"  {result.not_evaluated}", markup=False)


def _short(target: str) -> str:
    name, _, commit = target.partition("@")
    return f"{name}@{commit[:12]}"
