"""``fmforge remote``, ``push``, ``pull``, ``clone``: models between repositories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from fmforge.cli.context import FmforgeGroup, console, err_console, open_repository
from fmforge.remotes import TransferResult, add_remote, clone, list_remotes, remove_remote
from fmforge.remotes import pull as pull_model
from fmforge.remotes import push as push_model
from fmforge.remotes.sync import Progress as ProgressCallback

app = typer.Typer(cls=FmforgeGroup, help="Remotes to push to and pull from.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Remote name, e.g. 'origin'.")],
    url: Annotated[str, typer.Argument(help="A directory or s3://BUCKET/PREFIX.")],
    endpoint_url: Annotated[
        str | None, typer.Option(help="Endpoint of an S3-compatible service (MinIO, ...).")
    ] = None,
) -> None:
    """Add a remote: another repository's directory, or S3-compatible storage."""
    with open_repository(ctx) as repo:
        remote = add_remote(repo, name, url, endpoint_url)
    console.print(f"added remote {remote.name} {remote.url}", markup=False)


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """Every configured remote."""
    with open_repository(ctx) as repo:
        for remote in list_remotes(repo).values():
            extra = f" (endpoint {remote.endpoint_url})" if remote.endpoint_url else ""
            console.print(f"{remote.name:16} {remote.url}{extra}", markup=False)


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Forget a remote (nothing is deleted there)."""
    with open_repository(ctx) as repo:
        remove_remote(repo, name)
    console.print(f"removed remote {name}")


@contextmanager
def _progress() -> Iterator[ProgressCallback]:
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn())
    # Drawn only on a terminal: piped or captured output stays clean.
    quiet = not err_console.is_terminal
    with Progress(*columns, console=err_console, transient=True, disable=quiet) as bar:
        task = bar.add_task("objects", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield report


def _summary(verb: str, result: TransferResult) -> str:
    moved = ", ".join(f"{b} -> {c[:12]}" for b, c in result.branches.items()) or "no branch moved"
    tags = f"; tags {', '.join(result.tags)}" if result.tags else ""
    return (
        f"{verb} {result.model}: {result.commits} commits, {result.objects} objects "
        f"({result.bytes:,} bytes), {result.skipped_objects} already there; {moved}{tags}"
    )


def _transfer(ctx: typer.Context, verb: str, remote: str, model: str, branch: str | None) -> None:
    move = push_model if verb == "pushed" else pull_model
    with open_repository(ctx) as repo, _progress() as progress:
        result = move(repo, remote, model, branch=branch, progress=progress)
    console.print(_summary(verb, result), markup=False)


RemoteName = Annotated[str, typer.Argument(help="Remote name.")]
ModelName = Annotated[str, typer.Argument(help="Model name.")]
BranchOption = Annotated[str | None, typer.Option(help="Only this branch (default: all).")]


def push(
    ctx: typer.Context, remote: RemoteName, model: ModelName, branch: BranchOption = None
) -> None:
    """Send a model's commits, branches and tags; refused unless a fast-forward."""
    _transfer(ctx, "pushed", remote, model, branch)


def pull(
    ctx: typer.Context, remote: RemoteName, model: ModelName, branch: BranchOption = None
) -> None:
    """Fetch a model's commits and fast-forward its branches."""
    _transfer(ctx, "pulled", remote, model, branch)


def clone_(
    url: Annotated[str, typer.Argument(help="A directory or s3://BUCKET/PREFIX.")],
    directory: Annotated[Path, typer.Argument(help="Where the new repository goes.")],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Only these models (default: all).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="Endpoint of an S3-compatible service.")
    ] = None,
) -> None:
    """A new repository holding a remote's models, with the remote as 'origin'."""
    with _progress() as progress:
        results = clone(url, directory, endpoint_url=endpoint_url, models=model, progress=progress)
    for result in results:
        console.print(_summary("cloned", result), markup=False)
    console.print(f"cloned {len(results)} models into {directory}", markup=False)
