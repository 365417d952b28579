"""`fmforge label ...`: weak supervision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from fmforge.cli.context import FmforgeGroup, console, open_repository, text
from fmforge.data.labeling import LabelModel
from fmforge.data.labeling.wrench import import_wrench, label_matrix

app = typer.Typer(cls=FmforgeGroup, help="Weak supervision.", no_args_is_help=True)


@app.command("import-wrench")
def import_wrench_(ctx: typer.Context, directory: Path, name: str) -> None:
    """Import a WRENCH folder (train/valid/test JSON with weak_labels) as dataset NAME."""
    with open_repository(ctx) as repo:
        result = import_wrench(repo, directory, name)
    v = result.version
    lfs = v.transformation.get("lfs")
    console.print(f"{v.ref} ({v.id[:12]}): {v.rows:,} rows, {lfs} labeling functions")


@app.command("fit")
def fit(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    metric: Annotated[str, typer.Option(help="accuracy, or f1 (binary, class 1).")] = "accuracy",
) -> None:
    """Fit the label model on the train split (chosen on valid) and score it on test."""
    with open_repository(ctx) as repo:
        L, _ = label_matrix(repo, target, split="train")
        L_dev, y_dev = label_matrix(repo, target, split="valid")
        L_test, y_test = label_matrix(repo, target, split="test")
    if L.shape[0] == 0:
        L = L_dev
    model = LabelModel(metric=metric).fit(
        L, L_dev=L_dev if len(y_dev) else None, y_dev=y_dev if len(y_dev) else None
    )
    console.print(f"chosen: {model.chosen} (prior {np.round(model.chosen_prior, 3).tolist()})")
    for name, score in sorted(model.scores.items(), key=lambda item: -item[1]):
        console.print(f"  dev {metric} {score:.3f}  {name}", markup=False)
    if len(y_test):
        predicted = model.predict(L_test)
        console.print(f"test accuracy {np.mean(predicted == y_test):.3f}")


LFS_OPTION = typer.Option("--lfs", help="Labeling functions: a YAML file or a Python file.")
DEV_OPTION = typer.Option(
    "--dev-split", help="Values of the split column that hold gold dev rows (default: valid, dev)."
)


def _gold(column: str, splits: list[str] | None) -> Any:
    from fmforge.data.labeling.workflow import DEV_SPLITS, Gold

    return Gold(column, tuple(splits) if splits else DEV_SPLITS)


def _matrix(ctx: typer.Context, target: str, lfs: Path, workers: int | None = None) -> Any:
    from fmforge.data.labeling.functions import apply_lfs, load_lfs

    functions = load_lfs(lfs)
    with open_repository(ctx) as repo:
        return apply_lfs(repo, target, functions, workers=workers)


@app.command("apply")
def apply(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[Path, LFS_OPTION],
    workers: Annotated[int | None, typer.Option(help="Processes (default: one per core).")] = None,
) -> None:
    """Build the label matrix; only LFs not computed before on these rows run."""
    matrix = _matrix(ctx, target, lfs, workers)
    reused = len(matrix.lfs) - len(matrix.computed)
    console.print(
        f"{matrix.version.ref}: {matrix.matrix.shape[0]:,} rows x {len(matrix.lfs)} LFs; "
        f"computed {', '.join(matrix.computed) or 'none'}; reused {reused}",
        highlight=False,
        markup=False,
    )


@app.command("analyze")
def analyze_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[Path, LFS_OPTION],
    gold: Annotated[str, typer.Option(help="The gold label column.")] = "label",
    dev_split: Annotated[list[str] | None, DEV_OPTION] = None,
    examples: Annotated[bool, typer.Option(help="Show rows each LF fires on.")] = False,
) -> None:
    """Per LF: coverage, overlaps, conflicts, polarity, accuracy on gold, learned weight."""
    from fmforge.data.labeling.workflow import analyze

    matrix = _matrix(ctx, target, lfs)
    with open_repository(ctx) as repo:
        reports, warnings = analyze(repo, matrix, gold=_gold(gold, dev_split))
    width = max(len(r.name) for r in reports)
    console.print(
        f"{'LF':{width}}  kind     coverage overlap conflict polarity  gold acc  weight",
        highlight=False,
    )
    for r in reports:
        accuracy = "" if r.accuracy is None else f"{r.accuracy:.3f}"
        weight = "" if r.weight is None else f"{r.weight:.2f}"
        console.print(
            f"{r.name:{width}}  {r.kind:8} {r.coverage:8.3f} {r.overlap:7.3f} {r.conflict:8.3f} "
            f"{','.join(r.polarity):9} {accuracy:>8}  {weight:>6}",
            highlight=False,
            markup=False,
        )
    if examples:
        for r in reports:
            for fired in r.fires:
                console.print(f"  {r.name} fires: {fired}", markup=False, highlight=False)
            for conflict in r.conflicts:
                console.print(f"  {r.name} conflicts: {conflict}", markup=False, highlight=False)
    for warning in warnings:
        console.print(text(("warning:", "yellow"), f" {warning}"))


@app.command("model")
def model_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[Path, LFS_OPTION],
    gold: Annotated[str, typer.Option(help="The gold label column.")] = "label",
    dev_split: Annotated[list[str] | None, DEV_OPTION] = None,
    metric: Annotated[str, typer.Option(help="accuracy, or f1 (binary, class 1).")] = "accuracy",
) -> None:
    """Fit the label model (chosen on the gold dev rows) and commit the labelled version."""
    from fmforge.data.labeling.workflow import label_version

    matrix = _matrix(ctx, target, lfs)
    with open_repository(ctx) as repo:
        model, result = label_version(repo, matrix, gold=_gold(gold, dev_split), metric=metric)
    console.print(f"chosen: {model.chosen} (prior {np.round(model.chosen_prior, 3).tolist()})")
    for name, score in sorted(model.scores.items(), key=lambda item: -item[1])[:5]:
        console.print(f"  dev {metric} {score:.3f}  {name}", markup=False)
    v = result.version
    console.print(f"recorded {v.ref} ({v.id[:12]}): weak_label and weak_label_proba per row")


@app.command("suggest")
def suggest_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[Path, LFS_OPTION],
    n: Annotated[int, typer.Option("--n", help="How many rows.")] = 20,
) -> None:
    """Rows to label by hand: uncovered first, then conflicting, then least confident."""
    from fmforge.data.labeling.workflow import suggest

    matrix = _matrix(ctx, target, lfs)
    with open_repository(ctx) as repo:
        picks = suggest(repo, matrix, n)
        texts = dict(zip(matrix.row_ids, _texts(repo, matrix.version.ref), strict=True))
    for row_id, reason, _score in picks:
        console.print(f"{row_id[:12]}  {reason:18} {texts.get(row_id, '')[:70]}", markup=False)


@app.command("set")
def set_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    row: str,
    label: str,
    lfs: Annotated[Path, LFS_OPTION],
) -> None:
    """Record a manual label for a row (it wins over the label model's)."""
    from fmforge.data.labeling.functions import load_lfs
    from fmforge.data.labeling.workflow import set_label

    labels = list(load_lfs(lfs)[0].labels)
    with open_repository(ctx) as repo:
        row_id = set_label(repo, target, row, label, labels)
    console.print(f"{row_id[:12]} labelled {label}", markup=False)


@app.command("check")
def check(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[Path, LFS_OPTION],
) -> None:
    """Run the LFs again on stored rows and compare with their recorded votes."""
    from fmforge.data.labeling.functions import load_lfs, stale_lfs

    functions = load_lfs(lfs)
    with open_repository(ctx) as repo:
        stale = stale_lfs(repo, target, functions)
    if not stale:
        console.print("every recorded LF column agrees with its LF")
        return
    for name, rows in stale.items():
        console.print(text((name, "red"), f": {rows} sampled rows vote differently than recorded"))
    raise typer.Exit(1)


def _texts(repo: Any, ref: str) -> list[str]:
    from fmforge.data.versions import read_table

    table = read_table(repo, ref)
    if "text" not in table.column_names:
        return [""] * table.num_rows
    return [str(v) for v in table.column("text").to_pylist()]
