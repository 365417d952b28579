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


LFS_OPTION = typer.Option(
    "--lfs",
    help="Labeling functions: a YAML file, a Python file, or `accepted` (the dataset's "
    "accepted synthesized LFs).",
)
DEV_OPTION = typer.Option(
    "--dev-split", help="Values of the split column that hold gold dev rows (default: valid, dev)."
)


def _gold(column: str, splits: list[str] | None) -> Any:
    from fmforge.data.labeling.workflow import DEV_SPLITS, Gold

    return Gold(column, tuple(splits) if splits else DEV_SPLITS)


def _load(ctx: typer.Context, target: str, lfs: str) -> Any:
    """The LFs ``--lfs`` names: a file, or the dataset's accepted LFs."""
    from fmforge.data.labeling.functions import load_lfs
    from fmforge.data.labeling.review import ACCEPTED, accepted_lfs

    if lfs == ACCEPTED:
        with open_repository(ctx) as repo:
            return accepted_lfs(repo, target)
    return load_lfs(Path(lfs))


def _matrix(ctx: typer.Context, target: str, lfs: str, workers: int | None = None) -> Any:
    from fmforge.data.labeling.functions import apply_lfs

    functions = _load(ctx, target, lfs)
    with open_repository(ctx) as repo:
        return apply_lfs(repo, target, functions, workers=workers)


@app.command("apply")
def apply(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[str, LFS_OPTION],
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
    lfs: Annotated[str, LFS_OPTION],
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
    lfs: Annotated[str, LFS_OPTION],
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
    lfs: Annotated[str, LFS_OPTION],
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
    lfs: Annotated[str, LFS_OPTION],
) -> None:
    """Record a manual label for a row (it wins over the label model's)."""
    from fmforge.data.labeling.workflow import set_label

    labels = list(_load(ctx, target, lfs)[0].labels)
    with open_repository(ctx) as repo:
        row_id = set_label(repo, target, row, label, labels)
    console.print(f"{row_id[:12]} labelled {label}", markup=False)


@app.command("check")
def check(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    lfs: Annotated[str, LFS_OPTION],
) -> None:
    """Run the LFs again on stored rows and compare with their recorded votes."""
    from fmforge.data.labeling.functions import stale_lfs

    functions = _load(ctx, target, lfs)
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


_DURATION = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(budget: str) -> float:
    import re

    from fmforge.errors import LabelingError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", budget)
    if match is None:
        raise LabelingError(f"--budget must be a duration such as 60s or 2m, not {budget!r}")
    seconds = float(match[1]) * _DURATION[match[2] or "s"]
    if seconds <= 0:
        raise LabelingError("--budget must be more than 0 s: the search needs some time")
    return seconds


@app.command("synth")
def synth(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    intent: Annotated[str, typer.Option(help="What the positive class is, in words.")],
    examples: Annotated[
        Path | None, typer.Option(help="Labelled examples: JSON Lines or CSV, `label` + text.")
    ] = None,
    gold_column: Annotated[
        str | None, typer.Option(help="Take the rows with a value in this column as examples.")
    ] = None,
    column: Annotated[str, typer.Option(help="The text column.")] = "text",
    labels: Annotated[
        str | None, typer.Option(help="Class names in index order, comma-separated.")
    ] = None,
    feature_column: Annotated[
        list[str] | None, typer.Option(help="A numeric column for threshold LFs (repeatable).")
    ] = None,
    generators: Annotated[
        str | None,
        typer.Option(
            help="Which generators run, comma-separated (default: all of keywords, "
            "stems, intent, stumps, exemplars; without exemplars no row is embedded)."
        ),
    ] = None,
    budget: Annotated[str, typer.Option(help="Time for the search, e.g. 60s or 2m.")] = "60s",
    seed: Annotated[int, typer.Option(help="Shuffles the folds.")] = 0,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the LF file here.")
    ] = None,
) -> None:
    """Synthesize labeling functions from an intent and labelled examples; propose each one."""
    from fmforge.data.labeling.synth import SynthSpec, synthesize

    spec = SynthSpec.parse(
        target=target, intent=intent, examples=examples, gold_column=gold_column, column=column,
        labels=tuple(x.strip() for x in labels.split(",")) if labels is not None else None,
        numeric_columns=tuple(feature_column or ()), budget_s=_seconds(budget), seed=seed,
        **({"generators": tuple(g.strip() for g in generators.split(","))} if generators else {}),
    )  # fmt: skip
    with open_repository(ctx) as repo:
        result = synthesize(repo, spec)
    if output is not None:
        try:
            output.write_text(result.yaml, encoding="utf-8")
        except OSError as problem:
            from fmforge.errors import LabelingError

            raise LabelingError(f"{output}: {problem.strerror or problem}") from None
    width = max(len(lf.name) for lf in result.lfs)
    console.print(f"{'LF':{width}}  kind       generator  label       oof acc   coverage  new")
    for lf in result.lfs:
        oof = "" if lf.oof_accuracy is None else f"{lf.oof_accuracy:.2f} ({lf.oof_votes})"
        console.print(
            f"{lf.name:{width}}  {lf.kind:10} {lf.generator:10} {lf.label[:11]:11} {oof:>9} "
            f"{lf.coverage:9.1%}  {'yes' if lf.new else 'no'}"
        )
    new = sum(lf.new for lf in result.lfs)
    console.print(
        f"{len(result.lfs)} LFs of {result.candidates} candidates ({result.stopped}; "
        f"{result.skipped_rejected} rejected before skipped); out-of-fold accuracy "
        f"{result.oof_accuracy:.3f} on {len(result.example_labels)} examples; {new} proposed "
        f"now; embedded {result.embedded} texts in {result.embedding_s:.1f} s, search "
        f"{result.search_s:.1f} s"
    )
    if output is None:
        console.print(result.yaml, end="")
    else:
        console.print(f"wrote {output}; review with `fmforge label review {target.split('@')[0]}`")


@app.command("review")
def review_(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="NAME")],
    accept: Annotated[
        list[str] | None, typer.Option(help="A proposal id or LF name to accept (repeatable).")
    ] = None,
    reject: Annotated[
        list[str] | None, typer.Option(help="A proposal id or LF name to reject (repeatable).")
    ] = None,
    accept_all: Annotated[bool, typer.Option(help="Accept every pending proposal.")] = False,
    note: Annotated[str, typer.Option(help="Why, recorded with the verdicts.")] = "",
    write: Annotated[
        Path | None, typer.Option(help="Write the accepted LFs to this YAML file.")
    ] = None,
) -> None:
    """List the proposed LFs, accept or reject them, or write the accepted set."""
    import yaml

    from fmforge.data.labeling.review import accepted_spec, proposals, review

    with open_repository(ctx) as repo:
        wanted = list(accept or [])
        if accept_all:
            wanted += [p.proposal for p in proposals(repo, dataset, "pending")]
        if wanted or reject:
            for verdict, p in review(repo, dataset, accept=wanted, reject=reject or [], note=note):
                console.print(f"{verdict}ed {p.name} ({p.proposal[:8]})")
        if write is not None:
            spec = accepted_spec(repo, dataset)
            body = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
            write.write_text(f"# The accepted LFs of {dataset}.\n" + body, encoding="utf-8")
            console.print(f"wrote {len(spec['lfs'])} accepted LFs to {write}")
            return
        if wanted or reject:
            return
        listed = proposals(repo, dataset)
    if not listed:
        console.print(f"no LFs proposed for {dataset} (see `fmforge label synth`)")
        return
    width = max(len(p.name) for p in listed)
    for p in listed:
        right, votes = p.scores.get("oof_right", 0.0), p.scores.get("oof_votes", 0.0)
        oof = f"{right / votes:.2f} ({votes:.0f})" if votes else ""
        console.print(
            f"{p.proposal[:8]}  {p.status:8}  {p.name:{width}}  {p.kind:9}  {oof:>9}  "
            f"{p.scores.get('coverage', 0.0):6.1%}  {p.intent[:40]}"
        )


@app.command("end-model")
def end_model_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    examples: Annotated[
        Path | None, typer.Option(help="Labelled examples: JSON Lines or CSV, `label` + text.")
    ] = None,
    gold_column: Annotated[
        str | None, typer.Option(help="Take the rows with a value in this column as examples.")
    ] = None,
    column: Annotated[str, typer.Option(help="The text column.")] = "text",
    weak_column: Annotated[str, typer.Option(help="The weak labels.")] = "weak_label",
    eval_gold: Annotated[
        str | None, typer.Option(help="Also score both models on this gold column.")
    ] = None,
    eval_split: Annotated[
        str | None, typer.Option(help="... on the rows of this split only.")
    ] = None,
    seed: Annotated[int, typer.Option(help="For the folds and the classifier.")] = 0,
) -> None:
    """Train a classifier on the weak labels plus the examples; commit its predictions."""
    from fmforge.data.labeling.endmodel import EndModelSpec, end_model

    spec = EndModelSpec.parse(
        target=target, examples=examples, gold_column=gold_column, column=column,
        weak_column=weak_column, eval_column=eval_gold, eval_split=eval_split, seed=seed,
    )  # fmt: skip
    with open_repository(ctx) as repo:
        result = end_model(repo, spec)
    console.print(
        f"end model: {result.weak_rows:,} weak labels + {result.examples} examples; 5-fold "
        f"accuracy on the examples {result.cv_accuracy:.3f} (the examples alone: "
        f"{result.baseline_cv_accuracy:.3f})"
    )
    if result.eval_accuracy is not None:
        console.print(
            f"on {result.eval_rows:,} gold rows: {result.eval_accuracy:.3f} (the examples "
            f"alone: {result.baseline_eval_accuracy:.3f})"
        )
    verdict = "beats" if result.beats_baseline else "does NOT beat"
    v = result.version.version
    console.print(f"{verdict} the classifier on the examples alone; recorded {v.ref} "
                  f"({v.id[:12]}): end_label and end_label_proba per row")  # fmt: skip
