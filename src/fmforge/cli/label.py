"""`fmforge label ...`: weak supervision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fmforge.cli.context import FmforgeGroup, console, open_repository
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
        console.print(f"  dev {metric} {score:.3f}  {name}")
    if len(y_test):
        predicted = model.predict(L_test)
        console.print(f"test accuracy {np.mean(predicted == y_test):.3f}")
