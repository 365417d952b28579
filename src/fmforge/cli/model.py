"""``fmforge model``: version control for weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from fmforge.cli import merge as merge_commands
from fmforge.cli.context import FmforgeGroup, console, open_repository, text
from fmforge.errors import UsageError
from fmforge.models import (
    checkout,
    commit_model,
    create_branch,
    create_tag,
    delete_branch,
    reset_branch,
)
from fmforge.models.diff import diff_models
from fmforge.models.evaluations import ModelEvaluations
from fmforge.models.refs import ModelRefs, RefIndex, split_model_ref

app = typer.Typer(cls=FmforgeGroup, help="Version control for model weights.", no_args_is_help=True)


def _short(commit: str) -> str:
    return commit[:12]


@app.command("commit")
def commit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name, e.g. 'minilm'.")],
    path: Annotated[Path, typer.Argument(help="A .safetensors file or a model directory.")],
    message: Annotated[str, typer.Option("-m", "--message", help="What changed.")],
    branch: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    parent: Annotated[
        list[str] | None,
        typer.Option(
            help="Parent REF (default: the branch's head; for a new branch, main's head). "
            "Repeat for a merge commit."
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(metavar="NAME@REF", help="For an adapter: the model it adapts."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Commit even if the branch's head is not an ancestor (a recorded "
            "rewrite naming the commits it drops).",
        ),
    ] = False,
    orphan: Annotated[
        bool, typer.Option("--orphan", help="Start a new branch at a root commit.")
    ] = False,
) -> None:
    """Commit a model version: unchanged tensors cost nothing, changed ones are stored as deltas.

    PATH: a .safetensors file, a Hugging Face model directory (safetensors shards or PyTorch
    .bin weights, config and tokenizer files) or a PEFT adapter directory.
    """
    with open_repository(ctx) as repo:
        result = commit_model(
            repo, name, path, message, branch=branch, parents=parent or None, base=base,
            force=force, orphan=orphan,
        )  # fmt: skip
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.kinds.items())) or "none"
    if result.forked_from is not None:
        origin, at = result.forked_from
        console.print(f"new branch {branch} from {origin} ({_short(at)})", markup=False)
    elif not result.parents:
        console.print(f"new branch {branch} at a root commit", markup=False)
    if result.dropped:
        console.print(
            f"forced: {branch} no longer reaches {len(result.dropped)} commit(s): "
            + ", ".join(_short(c) for c in result.dropped),
            markup=False,
        )
    console.print(
        f"[{name} {branch} {_short(result.commit)}] {message}\n"
        f"  {result.tensors} tensors: {result.reused} unchanged, {result.deltas} deltas, "
        f"{result.full} full (encodings: {kinds})\n"
        f"  stored {result.stored_bytes:,} new bytes for {result.raw_bytes:,} bytes of files "
        f"({result.stored_bytes / max(result.raw_bytes, 1):.3f} of a full copy)",
        markup=False,
    )


@app.command("log")
def log(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="Model and start REF.")],
    limit: Annotated[int | None, typer.Option("-n", help="At most this many commits.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
    graph: Annotated[
        bool, typer.Option("--graph", help="Every commit of the model, with branch lines.")
    ] = False,
) -> None:
    """First-parent history of a branch (or any REF), newest first; --graph: all branches."""
    name, ref = split_model_ref(target)
    with open_repository(ctx) as repo:
        index = repo.view(ModelRefs)
        if graph:
            _print_graph(index, name, limit)
            return
        history = index.history(index.resolve(name, ref), limit)
        labels: dict[str, list[str]] = {}
        for branch, head in index.branches(name).items():
            labels.setdefault(head, []).append(branch)
        for tag, head in index.tags(name).items():
            labels.setdefault(head, []).append(f"tag: {tag}")
        evaluations = repo.view(ModelEvaluations).of_model(name)
    for info in history:
        evaluated = evaluations.get(info.commit, [])
        if as_json:
            record = {
                **dataclasses.asdict(info), "refs": labels.get(info.commit, []),
                "evaluations": [e.to_json() for e in evaluated],
            }  # fmt: skip
            typer.echo(orjson.dumps(record))
            continue
        names = f" ({', '.join(labels[info.commit])})" if info.commit in labels else ""
        console.print(text((_short(info.commit), "yellow"), f"{names} {info.message}"))
        console.print(
            f"    {info.time[:19].replace('T', ' ')}  {info.actor}  {info.tensors} tensors, "
            f"{info.stored_bytes:,} bytes stored",
            markup=False,
        )
        for evaluation in evaluated:
            console.print(f"    eval {evaluation.summary()}", markup=False)


def _print_graph(index: RefIndex, name: str, limit: int | None) -> None:
    """Commits newest first, one column per line of history (as ``git log --graph``)."""
    commits = index.all_commits(name)[:limit]
    labels: dict[str, list[str]] = {}
    for branch_name, head in index.branches(name).items():
        labels.setdefault(head, []).append(branch_name)
    for tag_name, head in index.tags(name).items():
        labels.setdefault(head, []).append(f"tag: {tag_name}")
    lanes: list[str | None] = []  # the commit each column waits for
    for info in commits:
        column = lanes.index(info.commit) if info.commit in lanes else None
        if column is None:
            column = lanes.index(None) if None in lanes else len(lanes)
            if column == len(lanes):
                lanes.append(None)
        # other columns waiting for the same commit merge into this one
        lanes = [None if (c == info.commit and i != column) else c for i, c in enumerate(lanes)]
        row = " ".join("*" if i == column else ("|" if c else " ") for i, c in enumerate(lanes))
        names = f" ({', '.join(labels[info.commit])})" if info.commit in labels else ""
        console.print(f"{row.rstrip()} {_short(info.commit)}{names} {info.message}", markup=False)
        lanes[column] = info.parents[0] if info.parents else None
        for extra in info.parents[1:]:
            if extra not in lanes:
                lanes.append(extra)
        while lanes and lanes[-1] is None:
            lanes.pop()


@app.command("diff")
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(metavar="NAME@REF", help="The version compared from.")],
    new: Annotated[str, typer.Argument(metavar="[NAME@]REF", help="The version compared to.")],
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as JSON.")] = False,
    tensors: Annotated[
        str | None, typer.Option(help="Only tensors whose names match this glob.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List unchanged tensors too.")] = False,
    rank: Annotated[
        bool,
        typer.Option(
            "--rank",
            help="Also the rank of each matrix's delta (99% of its energy): an "
            "eigendecomposition per matrix, the slow part of a diff.",
        ),
    ] = False,
) -> None:
    """Per tensor: changed / added / removed, L2 and relative change, max |delta|, fraction of
    entries changed, cosine (and with --rank the rank of the delta); then a summary per
    layer."""
    with open_repository(ctx) as repo:
        report = diff_models(repo, old, new, tensors=tensors, rank=rank)
    if as_json:
        typer.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
        return

    def num(label: str, value: float | None, fmt: str = ".3g") -> str:
        return "" if value is None else f" {label}={format(value, fmt)}"

    # One line per tensor, never truncated: names are what people grep for.
    for t in report.tensors:
        if t.status == "unchanged" and not show_all:
            continue
        layout = f"{t.dtype}{t.shape}"
        if t.old_dtype or t.old_shape:
            layout = f"{t.old_dtype or t.dtype}{t.old_shape or t.shape} -> {layout}"
        stats = (
            num("l2", t.l2) + num("rel", t.relative) + num("max|d|", t.max_abs)
            + num("changed", t.fraction_changed, ".1%") + num("cos", t.cosine, ".6f")
            + ("" if t.rank is None else f" rank={t.rank}")
        )  # fmt: skip
        console.print(f"{t.status:9} {t.name} {layout}{stats}", markup=False)
    layers = Table("layer", "tensors", "changed", "added", "removed", "L2 of delta", "relative")
    for s in report.layers:
        layers.add_row(
            s.layer, str(s.tensors), str(s.changed), str(s.added), str(s.removed),
            f"{s.l2:.4g}", f"{s.relative:.4g}",
        )  # fmt: skip
    console.print(layers)
    counts = report.counts()
    console.print(
        f"{counts['changed']} changed, {counts['added']} added, {counts['removed']} removed, "
        f"{counts['unchanged']} unchanged tensors; files: "
        + ", ".join(f"{len(v)} {k}" for k, v in report.files.items()),
        markup=False,
    )


@app.command("show")
def show(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME@REF")],
) -> None:
    """One commit: parents, message, sizes, evaluations."""
    name, ref = split_model_ref(target)
    with open_repository(ctx) as repo:
        index = repo.view(ModelRefs)
        info = index.commit(index.resolve(name, ref))
        from fmforge.data.lineage import forgotten_in

        forgotten = [
            f for f in forgotten_in(repo)
            if any(m["model"] == name and m["commit"] == info.commit for m in f["models"])
        ]  # fmt: skip
        evaluated = repo.view(ModelEvaluations).of_commit(info.commit)
    console.print(f"commit   {info.commit}", markup=False)
    console.print(f"model    {info.model}", markup=False)
    console.print(f"parents  {' '.join(info.parents) or '(none)'}", markup=False)
    console.print(f"author   {info.actor}  {info.time}", markup=False)
    console.print(f"manifest {info.manifest}", markup=False)
    if info.base:
        console.print(f"adapts   {info.base}", markup=False)
    console.print(
        f"size     {info.tensors} tensors, {info.raw_bytes:,} bytes of files, "
        f"{info.stored_bytes:,} new bytes stored",
        markup=False,
    )
    for evaluation in evaluated:
        run = f"; run {evaluation.run[-12:]}" if evaluation.run else ""
        console.print(f"eval     {evaluation.summary()}{run}", markup=False)
    for record in forgotten:
        console.print(
            text(
                (
                    f"trained on forgotten data: {record['rows']} rows of {record['dataset']} "
                    f"({record['reason']})",
                    "yellow",
                )
            )
        )
    console.print(f"\n    {info.message}", markup=False)


@app.command("branch")
def branch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    new_branch: Annotated[str | None, typer.Argument(metavar="BRANCH", help="Create it.")] = None,
    ref: Annotated[str, typer.Argument(metavar="REF", help="Where it starts.")] = "main",
    delete: Annotated[
        bool,
        typer.Option(
            "-d", "--delete", help="Delete BRANCH (refused if only it reaches some commits)."
        ),
    ] = False,
    force_delete: Annotated[
        bool, typer.Option("-D", help="Delete BRANCH even if only it reaches some commits.")
    ] = False,
) -> None:
    """List branches, create BRANCH at REF, or delete it (-d, -D)."""
    if delete or force_delete:
        if new_branch is None:
            raise UsageError("name the branch to delete: fmforge model branch MODEL -d BRANCH")
        with open_repository(ctx) as repo:
            head = delete_branch(repo, name, new_branch, force=force_delete)
        console.print(f"deleted branch {new_branch} (was {_short(head)})", markup=False)
        return
    _list_or_create(ctx, name, "branch", new_branch, ref)


@app.command("tag")
def tag(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    new_tag: Annotated[str | None, typer.Argument(metavar="TAG", help="Create it.")] = None,
    ref: Annotated[str, typer.Argument(metavar="REF")] = "main",
) -> None:
    """List tags, or tag REF (tags never move)."""
    _list_or_create(ctx, name, "tag", new_tag, ref)


def _list_or_create(ctx: typer.Context, model: str, kind: str, new: str | None, ref: str) -> None:
    with open_repository(ctx) as repo:
        if new is not None:
            create = create_branch if kind == "branch" else create_tag
            commit = create(repo, model, new, ref)
            console.print(f"created {kind} {new} at {_short(commit)}", markup=False)
            return
        index = repo.view(ModelRefs)
        existing = index.branches(model) if kind == "branch" else index.tags(model)
        for ref_name, head in existing.items():
            console.print(f"{ref_name:20} {_short(head)}", markup=False)


@app.command("reset")
def reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    branch_name: Annotated[str, typer.Argument(metavar="BRANCH")],
    ref: Annotated[str, typer.Argument(metavar="REF")],
) -> None:
    """Move BRANCH to REF; recorded as an event, nothing is deleted."""
    with open_repository(ctx) as repo:
        commit = reset_branch(repo, name, branch_name, ref)
    console.print(f"{branch_name} now at {_short(commit)}", markup=False)


@app.command("checkout")
def checkout_(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="NAME@REF")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")],
    tensors: Annotated[
        str | None, typer.Option(help="Only tensors whose names match this glob.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a non-empty directory, overwriting the files it holds."
        ),
    ] = False,
) -> None:
    """Write a version to a new or empty directory; safetensors files come back byte-identical.
    Nothing is left behind when it fails."""
    with open_repository(ctx) as repo:
        result = checkout(repo, target, output, tensors=tensors, force=force)
    console.print(
        f"checked out {result.model}@{_short(result.commit)} into {result.directory}: "
        f"{result.files} files, {result.tensors} tensors, {result.bytes_written:,} bytes, verified"
    )


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """Every model with its branches."""
    with open_repository(ctx) as repo:
        index = repo.view(ModelRefs)
        table = Table("model", "branches", "tags", "commits")
        for model in index.models():
            table.add_row(
                model,
                ", ".join(index.branches(model)),
                ", ".join(index.tags(model)),
                str(len(index.all_commits(model))),
            )
    console.print(table)


merge_commands.register(app)
