"""``fmforge runs``: list, show and compare training runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer
from rich.table import Table

from fmforge.cli.context import FmforgeGroup, console, open_repository, text
from fmforge.tracking.compare import compare_runs
from fmforge.tracking.environment import flatten
from fmforge.tracking.overview import Columns, metric_columns
from fmforge.tracking.reading import load_run
from fmforge.tracking.report import write_report
from fmforge.tracking.views import RunsView

app = typer.Typer(cls=FmforgeGroup, help="Training runs.", no_args_is_help=True)
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(columns: Columns) -> str:
    """One cell per column (a block of steps, see ``tracking.overview``): its extreme farther
    from the column's last value, so a spike never vanishes; ``!`` where a column holds only
    NaN or Inf, a space where it holds nothing."""
    rows = columns.rows
    finite = rows["finite"] > 0
    if not finite.any():
        return ""
    # Halved: the span of two float64 extremes can overflow; its ratios do not change.
    low, high = float(rows["min"][finite].min()) / 2, float(rows["max"][finite].max()) / 2
    cells: dict[int, str] = {}
    for row in rows:
        if not row["finite"]:
            cells[int(row["block"])] = "!"  # NaN or Inf in this stretch
            continue
        last = row["last"] if np.isfinite(row["last"]) else row["min"]
        farther = abs(row["max"] - last) >= abs(row["min"] - last)
        extreme = float(row["max"] if farther else row["min"]) / 2
        level = 0 if high == low else int((extreme - low) / (high - low) * (len(_BARS) - 1))
        cells[int(row["block"])] = _BARS[level]
    first, last_column = columns.lo >> columns.level, columns.hi >> columns.level
    return "".join(cells.get(c, " ") for c in range(first, last_column + 1))


def _user_tags(tags: dict[str, str]) -> dict[str, str]:
    """Key-value tags less MLflow's bookkeeping (``mlflow.*``: source, user, parent)."""
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def _tag_text(tags: dict[str, str], limit: int = 40) -> str:
    text = ", ".join(f"{k}={v}" for k, v in sorted(_user_tags(tags).items()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parents_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each child run right after its parent (when both are listed)."""
    ids = {r["id"] for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["parent"] in ids:
            children.setdefault(row["parent"], []).append(row)
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["parent"] not in ids:
            out.append(row)
            out.extend(children.get(row["id"], []))
    return out


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("ls")
def ls(
    ctx: typer.Context,
    where: Annotated[
        str | None,
        typer.Argument(help='A query, e.g. "config.lr > 1e-4 and metrics.eval_acc.max > 0.9".'),
    ] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metric columns (default: 3).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
    count: Annotated[
        int, typer.Option("-n", "--max-count", min=1, help="Show the N newest runs.")
    ] = 20,
    every: Annotated[bool, typer.Option("--all", help="Show every run (no -n).")] = False,
) -> None:
    """Runs, newest first (a page of 20: -n N, --all), filtered by a query over config,
    metrics, status, tags, datasets. The id column is each id's tail, which `runs show` and
    `runs compare` accept as it is (--json gives whole ids); child runs follow their parent."""
    with open_repository(ctx) as repo:
        rows = repo.view(RunsView).rows(where, project=project, limit=None if every else count + 1)
    more = not every and len(rows) > count
    rows = rows if every else rows[:count]
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row))
        return
    names = metric or sorted({m for r in rows for m in r["metrics"]})[:3]
    tagged = any(_user_tags(r["tag_values"]) for r in rows)
    table = Table(
        "id", "name", "project", "status", "started", *(f"{n} (last)" for n in names),
        "anomalies", *(["tags"] if tagged else []),
    )  # fmt: skip
    table.columns[0].no_wrap = True  # the id's tail: `runs show` and `compare` take it whole
    shown = {r["id"] for r in rows}
    for row in _parents_first(rows):
        child = row["parent"] in shown
        table.add_row(
            row["id"][-12:], ("↳ " if child else "") + row["name"], row["project"], row["status"],
            _when(row["started"]), *(_num(row["metrics"].get(n, {}).get("last")) for n in names),
            str(row["anomalies"]),
            *([_tag_text(row["tag_values"])] if tagged else []),
        )  # fmt: skip
    console.print(table)
    if more:
        console.print(f"the {count} newest shown; -n N or --all for more", markup=False)


@app.command("show")
def show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="ID-or-NAME")],
) -> None:
    """One run: config, lineage, metric summaries with sparklines, anomalies, checkpoints."""
    with open_repository(ctx) as repo:
        record = load_run(repo, repo.view(RunsView).resolve(run))
        series = {name: metric_columns(repo, record.id, name, 32) for name in record.summary}
    console.print(
        text((record.name, "bold"), f"  {record.id}  project {record.project}  {record.status}")
    )
    duration = f"{record.duration_s:.1f} s" if record.duration_s is not None else "still running"
    console.print(f"started {_when(record.started)}, {duration}", markup=False)
    code = record.environment.get("code", {})
    if code:
        dirty = " + uncommitted changes" if code.get("dirty") else ""
        console.print(f"code    {code.get('git_commit') or 'not in git'}{dirty}", markup=False)
    if record.environment:  # a remote MLflow client's says less: its source, its host
        env = record.environment
        python = f"python  {env['python']} on " if env.get("python") else "host    "
        console.print(
            f"{python}{env.get('host', '?')}; command {' '.join(env.get('command', [])) or '?'}",
            markup=False,
        )
    console.print(
        f"data    {', '.join(record.datasets) or '-'}; base model {record.base_model or '-'}",
        markup=False,
    )
    if record.parent or record.children:
        family = f"parent  {record.parent}" if record.parent else ""
        if record.children:
            family += ("; " if family else "") + f"children {', '.join(record.children)}"
        console.print(family, markup=False)
    tags = _user_tags(record.tag_values)
    if tags:
        console.print(f"tags    {', '.join(f'{k}={v}' for k, v in sorted(tags.items()))}",
                      markup=False)  # fmt: skip
    if record.config:
        console.print(text(("config", "bold")))
        for key, value in sorted(flatten(record.config).items()):
            console.print(f"  {key} = {value!r}", markup=False)
    table = Table("metric", "count", "last", "min", "max", "curve")
    table.columns[0].overflow = "fold"  # metric names are what people look for: never cut
    for name, summary in sorted(record.summary.items()):
        table.add_row(
            name, str(summary["count"]), _num(summary["last"]), _num(summary["min"]),
            _num(summary["max"]), sparkline(series[name]),
        )  # fmt: skip
    console.print(table)
    for anomaly in record.anomalies:
        console.print(
            text(
                ("anomaly", "red"),
                f" {anomaly['detector']} on {anomaly['metric']} at step "
                f"{anomaly['step']}: {anomaly['evidence']}",
            )
        )
    for checkpoint in record.checkpoints:
        where = f"{checkpoint['model']}@{checkpoint['commit'][:12]}"
        console.print(f"checkpoint step {checkpoint['step']}: {where}", markup=False)
    if record.evals:
        table = Table("evaluation step", "dataset", "results")
        for evaluation in record.evals:
            results = ", ".join(f"{k}={_num(v)}" for k, v in sorted(evaluation["metrics"].items()))
            table.add_row(str(evaluation["step"]), evaluation.get("dataset") or "-", results)
        console.print(table)
    if record.inputs:
        for item in record.inputs:
            for dataset in item["datasets"]:
                version = f" = {dataset['version']}" if dataset.get("version") else ""
                console.print(f"input   {dataset['name']}{version} ({dataset['source_type']})",
                              markup=False)  # fmt: skip


@app.command("report")
def report(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="ID-or-NAME")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")],
) -> None:
    """One self-contained HTML file with the run's config, metrics, anomalies and curves."""
    with open_repository(ctx) as repo:
        path = write_report(repo, repo.view(RunsView).resolve(run), output)
    console.print(f"wrote {path}", markup=False)


@app.command("import-tb")
def import_tb(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A TensorBoard log directory.")],
    project: Annotated[str, typer.Option(help="Project of the imported runs.")] = "tensorboard",
) -> None:
    """Import TensorBoard event files: one run per directory of event files, scalars at their
    steps with their original times."""
    from fmforge.tracking.tensorboard import import_tensorboard

    with open_repository(ctx) as repo:
        ids = import_tensorboard(repo, directory, project=project)
    console.print(f"imported {len(ids)} runs from {directory}", markup=False)


@app.command("compare")
def compare(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(metavar="ID-or-NAME...", help="Two or more runs.")],
    tolerance: Annotated[
        float, typer.Option(help="Relative difference where curves count as diverged.")
    ] = 0.05,
) -> None:
    """Config differences, a metric table, and the first step where curves diverge."""
    with open_repository(ctx) as repo:
        index = repo.view(RunsView)
        report = compare_runs(repo, [index.resolve(r) for r in runs], tolerance=tolerance)
    names = report.names
    if report.config_diff:
        table = Table("config", *names)
        for key, values in sorted(report.config_diff.items()):
            table.add_row(key, *(repr(v) for v in values))
        console.print(table)
    else:
        console.print("same config")
    table = Table("metric", *(f"{n} last / min / max" for n in names), "first divergence")
    for metric, stats in sorted(report.metrics.items()):
        divergence = report.divergence.get(metric)
        table.add_row(
            metric,
            *(
                " / ".join(_num(s.get(k)) for k in ("last", "min", "max")) if s else "-"
                for s in stats
            ),
            "-" if divergence is None else f"step {divergence}",
        )
    console.print(table)


@app.command("replay")
def replay_(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="ID-or-NAME")],
) -> None:
    """Re-run a recorded CPU finetune from its recorded inputs (spec, base commit, dataset
    version, seed) and compare the bits: exit 0 when every logged loss, checkpoint and the
    result are identical, else 1 naming the first step and tensor that differ."""
    from fmforge.training.replays import replay

    with open_repository(ctx) as repo:
        report = replay(repo, run)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"run {report.run[-12:]}: {report.summary()}", markup=False)
    if not report.identical:
        raise typer.Exit(1)
