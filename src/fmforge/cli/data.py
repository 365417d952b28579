"""`fmforge data ...`: versioned datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from fmforge.cli.context import FmforgeGroup, console, open_repository, text
from fmforge.data import (
    add_dataset,
    dataset_log,
    diff_datasets,
    export_dataset,
    head,
    list_datasets,
    resolve,
    where,
)
from fmforge.errors import UsageError

app = typer.Typer(cls=FmforgeGroup, help="Versioned datasets.", no_args_is_help=True)
_FILTER = "one SQL expression over the columns; see Filters in docs/cli.md"


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    source: Annotated[Path, typer.Argument(help="A .csv, .jsonl or .parquet file, or a folder.")],
    message: Annotated[str | None, typer.Option("--message", "-m")] = None,
    allow_schema_change: Annotated[
        bool, typer.Option(help="Accept removed or retyped columns.")
    ] = False,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="The text files' encoding (e.g. latin-1); default UTF-8, or what a "
            "byte-order mark says."
        ),
    ] = None,
) -> None:
    """Record the rows of SOURCE as the next version of dataset NAME."""
    with open_repository(ctx) as repo:
        result = add_dataset(
            repo, name, source, message=message, allow_schema_change=allow_schema_change,
            encoding=encoding,
        )  # fmt: skip
    v = result.version
    if not result.created:
        console.print(f"{v.ref} ({v.id[:12]}) already holds exactly these rows: nothing recorded")
        return
    extra = f"; new columns: {', '.join(result.added_columns)}" if result.added_columns else ""
    console.print(f"{v.ref} ({v.id[:12]}): {v.rows:,} rows, {len(v.columns)} columns{extra}")


@app.command("merge")
def merge(
    ctx: typer.Context,
    name: str,
    sources: Annotated[list[str], typer.Argument(metavar="NAME@REF...")],
    message: Annotated[str | None, typer.Option("--message", "-m")] = None,
) -> None:
    """Record the rows of several versions as the next version of NAME (parents: all)."""
    from fmforge.data.versions import merge_datasets

    with open_repository(ctx) as repo:
        result = merge_datasets(repo, name, sources, message=message)
    v = result.version
    duplicates = v.transformation.get("duplicates", 0)
    console.print(
        f"{v.ref} ({v.id[:12]}): {v.rows:,} rows from {len(v.parents)} versions; "
        f"{duplicates} records held by more than one were kept once",
        highlight=False,
    )


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """Every dataset with its newest version."""
    with open_repository(ctx) as repo:
        versions = list_datasets(repo)
    table = Table("dataset", "version", "rows", "columns", "time")
    for v in versions:
        table.add_row(v.dataset, f"v{v.number}", f"{v.rows:,}", str(len(v.columns)), v.time[:19])
    console.print(table)


@app.command("log")
def log(ctx: typer.Context, name: str) -> None:
    """The versions of NAME, newest first, with what made each."""
    with open_repository(ctx) as repo:
        versions = dataset_log(repo, name)
    for v in versions:
        kind = v.transformation.get("kind", "?")
        console.print(
            text(
                (f"v{v.number}", "bold"),
                f" {v.id[:12]}  {v.time[:19]}  {v.rows:,} rows  {kind}: {v.message}",
            )
        )


@app.command("show")
def show(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    rows: Annotated[int, typer.Option("--rows", "-n", help="Sample rows to print.")] = 5,
    condition: Annotated[
        str | None,
        typer.Option("--where", help=f"A filter, e.g. \"label = 'spam'\" ({_FILTER})."),
    ] = None,
) -> None:
    """Schema, row count, lineage and a sample of a version."""
    with open_repository(ctx) as repo:
        version = resolve(repo, target)
        table = (
            where(repo, version.ref, condition)
            if condition is not None
            else head(repo, version.ref, max(rows, 0))
        )
    console.print(text((version.ref, "bold"), f"  {version.id}"))
    matching = f" ({table.num_rows:,} match)" if condition is not None else ""
    console.print(f"rows: {version.rows:,}{matching}")
    parents = ", ".join(p[:12] for p in version.parents) or "none"
    console.print(f"made by: {version.transformation.get('kind')}; parents: {parents}")
    console.print("columns: " + ", ".join(f"{c['name']} ({c['type']})" for c in version.columns))
    sample = Table(*table.column_names)
    for record in table.slice(0, rows).to_pylist():
        sample.add_row(*(_cell(value) for value in record.values()))
    console.print(sample)


@app.command("diff")
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(metavar="NAME@REF")],
    new: Annotated[str, typer.Argument(metavar="[NAME@]REF")],
    key: Annotated[
        str | None, typer.Option(help="A column identifying a record: count changed rows.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rows added, removed (and with --key, changed, by column) between two versions."""
    with open_repository(ctx) as repo:
        report = diff_datasets(repo, old, new, key=key)
    if as_json:
        typer.echo(orjson.dumps(report.to_json(), default=str))
        return
    console.print(f"{report.old} -> {report.new}", highlight=False)
    line = f"+{report.added:,} rows, -{report.removed:,} rows, {report.unchanged:,} unchanged"
    if key is not None:
        line += f", {report.changed:,} changed (by {key})"
    console.print(line)
    for column, count in sorted(report.changed_by_column.items()):
        console.print(f"  {column}: {count:,} rows changed")
    if report.columns_added or report.columns_removed:
        console.print(f"columns added {report.columns_added}, removed {report.columns_removed}")
    for kind, rows in report.examples.items():
        for row in rows:
            console.print(
                f"  {kind}: {orjson.dumps(row, default=str).decode()[:160]}", markup=False
            )


@app.command("export")
def export(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".csv, .jsonl or .parquet")],
) -> None:
    """Write a version to a file, rows in their order."""
    with open_repository(ctx) as repo:
        written = export_dataset(repo, target, output)  # resolved and confirmed by the ledger
        version = resolve(repo, target)
    console.print(f"wrote {written:,} rows of {version.ref} to {output}")


@app.command("clean")
def clean(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    rules: Annotated[Path, typer.Option("--rules", "-r", help="A rules YAML file.")],
    apply: Annotated[
        bool, typer.Option("--apply/--preview", help="Commit the result, or only show it.")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", "-m")] = None,
) -> None:
    """Run cleaning rules: per rule, how many rows it drops or rewrites, with examples."""
    from fmforge.data.cleaning import apply_cleaning, load_rules, plan_cleaning

    parsed = load_rules(rules)
    with open_repository(ctx) as repo:
        if apply:
            plan, result = apply_cleaning(repo, target, parsed, message=message)
        else:
            plan, result = plan_cleaning(repo, target, parsed), None
    console.print(
        f"{plan.source}: {plan.rows_before:,} rows -> {plan.rows_after:,}", highlight=False
    )
    for number, report in enumerate(plan.reports, 1):
        ((kind, options),) = report.rule.items()
        console.print(
            text(
                (f"{number}. {kind}", "bold"),
                f" {orjson.dumps(options).decode()}: "
                f"{report.dropped:,} dropped, {report.rewritten:,} rewritten",
            )
        )
        for example in report.examples:
            shown = orjson.dumps(example, default=str).decode()[:200]
            console.print(f"     {shown}", markup=False, highlight=False)
    if result is None:
        console.print("preview only: nothing recorded (--apply commits it)")
    elif result.created:
        console.print(f"recorded {result.version.ref} ({result.version.id[:12]})")
    else:
        console.print("the rules change nothing: no version recorded")


@app.command("review")
def review_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    row: Annotated[str | None, typer.Argument(help="A flagged row id (a prefix will do).")] = None,
    accept: Annotated[bool, typer.Option("--accept", help="Keep the rule's change.")] = False,
    override: Annotated[
        bool, typer.Option("--override", help="Undo the change; re-applying keeps it undone.")
    ] = False,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    pending: Annotated[bool, typer.Option(help="Only rows without a verdict.")] = False,
) -> None:
    """List the rows the newest cleaning changed, or record a verdict on one."""
    from fmforge.data.review import flagged, review

    with open_repository(ctx) as repo:
        if row is not None:
            if accept == override:
                raise UsageError("give exactly one of --accept or --override")
            flag = review(repo, target, row, "accept" if accept else "override", note=note)
            console.print(f"{flag.row_id[:12]}: {flag.verdict} by {flag.reviewer}")
            return
        flags = flagged(repo, target)
    table = Table("row", "rule", "action", "verdict", "row before")
    for flag in flags:
        if pending and flag.verdict is not None:
            continue
        (kind,) = flag.rule
        row_text = orjson.dumps(flag.row, default=str).decode()
        table.add_row(
            flag.row_id[:12], kind, flag.action, flag.verdict or "-",
            row_text if len(row_text) <= 80 else row_text[:77] + "...",
        )  # fmt: skip
    console.print(table)


@app.command("trace")
def trace_(
    ctx: typer.Context,
    row: Annotated[str | None, typer.Argument(help="A row id (8+ characters will do).")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="With --where: the NAME[@REF] to pick rows from.")
    ] = None,
    condition: Annotated[str | None, typer.Option("--where", help=f"A filter ({_FILTER}).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every dataset version holding a record, and the runs and model commits trained on it."""
    from fmforge.data.lineage import trace

    with open_repository(ctx) as repo:
        if row is not None:
            rows = [row]
        elif dataset and condition is not None:
            rows = where(repo, dataset, condition).column("_row_id").to_pylist()[:20]
        else:
            raise UsageError("give a ROW id, or --dataset NAME --where CONDITION")
        traces = [trace(repo, r) for r in rows]
    for found in traces:
        if as_json:
            typer.echo(orjson.dumps(found.__dict__))
            continue
        console.print(text((f"row {found.row_ids[0][:16]}", "bold")))
        for alias in found.row_ids[1:]:
            console.print(f"  later id {alias[:16]} (rewritten by a cleaning)", highlight=False)
        for v in found.versions:
            console.print(f"  in {v['ref']} ({v['made_by']})", highlight=False)
        for r in found.runs:
            console.print(f"  trained run {r['name']} ({r['id'][-12:]}) on {r['dataset']}")
        for m in found.models:
            console.print(f"  model {m['model']}@{m['commit'][:12]} from run {m['run'][-12:]}")


@app.command("tag")
def tag(
    ctx: typer.Context,
    name: str,
    licence: Annotated[
        str | None, typer.Option(help="Its licence, e.g. CC-BY-NC-4.0 (non-commercial).")
    ] = None,
    pii: Annotated[
        list[str] | None,
        typer.Option("--pii", metavar="COLUMN", help="A column of personal data (repeatable)."),
    ] = None,
    subject_id: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN",
            help="The column naming each row's data subject: personal data is then stored "
            "encrypted per subject, so `data forget --subject` can erase it.",
        ),
    ] = None,
    consent: Annotated[
        list[str] | None,
        typer.Option(metavar="PURPOSE", help="A purpose the subjects consented to (repeatable)."),
    ] = None,
    pii_mode: Annotated[
        str | None, typer.Option(help="mask (default) or deny: a read without read_pii.")
    ] = None,
) -> None:
    """Declare what NAME is: licence, personal-data columns, subject id, consent (checked by
    access control at each access). Without options, print what it declares."""
    from fmforge.data.subjects import dataset_tags, tag_dataset

    given: dict[str, object] = {}
    for key, value in (("licence", licence), ("pii", pii), ("subject_id", subject_id),
                       ("consent", consent), ("pii_mode", pii_mode)):  # fmt: skip
        if value is not None:
            given[key] = value
    with open_repository(ctx) as repo:
        tags = tag_dataset(repo, name, **given) if given else dataset_tags(repo, name)  # type: ignore[arg-type]
    console.print(orjson.dumps(tags.to_json()).decode(), markup=False, highlight=False)


@app.command("forget")
def forget_(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The dataset (with --where).")] = None,
    condition: Annotated[
        str | None, typer.Option("--where", help=f"A filter: the rows to forget ({_FILTER}).")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="Erase this data subject from every dataset by destroying their key (datasets "
            "tagged with --subject-id)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why: recorded with the forgetting.")] = "",
) -> None:
    """Commit NAME without the rows matching --where and erase them from the store; or, with
    --subject, erase a data subject everywhere (crypto-shredding)."""
    from fmforge.data.lineage import forget

    if subject is not None:
        if name is not None or condition is not None:
            raise UsageError("--subject erases a subject everywhere: give no NAME or --where")
        _forget_subject(ctx, subject, reason)
        return
    if name is None or condition is None:
        raise UsageError("give NAME and --where CONDITION (or --subject ID)")
    with open_repository(ctx) as repo:
        done = forget(repo, name, condition, reason=reason)
    v = done.result.version
    console.print(f"{v.ref}: {done.rows:,} rows forgotten ({reason}); {len(done.erased)} row "
                  f"chunks erased from the store", highlight=False)  # fmt: skip
    if done.kept_live:
        console.print(f"{done.kept_live} of those records are still held by the newest version "
                      "of another dataset: their chunks were kept")  # fmt: skip
    for model in done.models:
        console.print(
            text(
                (
                    f"model {model['model']}@{model['commit'][:12]} was trained on forgotten data",
                    "yellow",
                )
            )
        )
    for run in done.runs:
        console.print(f"run {run['name']} used {run['dataset']}", highlight=False)


def _forget_subject(ctx: typer.Context, subject: str, reason: str) -> None:
    from fmforge.data.subjects import forget_subject

    with open_repository(ctx) as repo:
        done = forget_subject(repo, subject, reason=reason)
    console.print(
        f"subject {done.pseudonym[:16]} forgotten: key {done.key_id} destroyed in "
        f"{done.seconds:.3f} s; their rows are gone from every read",
        highlight=False,
    )
    for resource in done.flagged:
        console.print(f"needs unlearning: {resource}", markup=False, highlight=False)


@app.command("issues")
def issues_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]")],
    row: Annotated[str | None, typer.Argument(help="A queued row id, to record a verdict.")] = None,
    find: Annotated[bool, typer.Option("--find", help="Look for label issues now.")] = False,
    label_column: Annotated[str, typer.Option("--label")] = "label",
    features: Annotated[str, typer.Option(help="tfidf, minilm or tfidf+minilm")] = "tfidf+minilm",
    relabel: Annotated[str | None, typer.Option(help="The right label for ROW.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="ROW's given label is right.")] = False,
    n: Annotated[int, typer.Option("--n", help="Rows of the queue to show.")] = 20,
) -> None:
    """Rows whose label looks wrong (confident learning), ranked; and reviewers' verdicts."""
    from fmforge.data.issues import find_issues, issue_queue, review_issue

    with open_repository(ctx) as repo:
        if row is not None:
            if (relabel is None) == (not keep):
                raise UsageError("give exactly one of --relabel LABEL or --keep")
            label = _as_label(relabel)
            issue = review_issue(repo, target, row, "keep" if keep else "relabel", label)
            console.print(f"{issue.row_id[:12]}: {issue.verdict}" + (
                f" as {issue.label}" if issue.verdict == "relabel" else ""))  # fmt: skip
            return
        queue = (
            find_issues(repo, target, label=label_column, features=features)
            if find
            else issue_queue(repo, target)
        )
    console.print(f"{len(queue)} rows flagged, most likely wrong first")
    for issue in queue[:n]:
        verdict = f"  [{issue.verdict}]" if issue.verdict else ""
        console.print(
            f"{issue.row_id[:12]}  given {issue.given!s:6} model says {issue.suggested!s:6} "
            f"p={issue.quality:.2f}{verdict}  {issue.text[:50]}",
            markup=False, highlight=False,
        )  # fmt: skip


def _as_label(text: str | None) -> object:
    """A label as typed: an integer when it looks like one (labels are often class indices)."""
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _cell(value: object) -> str:
    shown = str(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
