"""``fmforge``: the root command and the repository-wide commands."""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from fmforge import __version__
from fmforge.cli import (
    access,
    audit,
    data,
    events,
    label,
    login,
    model,
    remote,
    runs,
    serve,
    train,
)  # fmt: skip
from fmforge.cli.context import FmforgeGroup, console, open_repository, store_option, text
from fmforge.cli.events import read_jsonl
from fmforge.demo import run_demo
from fmforge.errors import RepositoryNotFound, UsageError
from fmforge.ledger import Event
from fmforge.models.maintenance import prunable_objects, verify_tensors
from fmforge.repository import Repository, find_repository
from fmforge.settings import SETTINGS, STORE_ENV, load_settings

app = typer.Typer(
    cls=FmforgeGroup,
    help="fmforge: version control, lineage and audit for foundation-model data and weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(access.app, name="access")
app.add_typer(audit.app, name="audit")
app.add_typer(data.app, name="data")
app.add_typer(events.app, name="events")
app.add_typer(label.app, name="label")
app.add_typer(model.app, name="model")
app.add_typer(remote.app, name="remote")
app.add_typer(runs.app, name="runs")
app.add_typer(serve.app, name="deployment")
app.command("serve")(serve.serve)
app.command("login")(login.login)
app.command("logout")(login.logout)
app.command("whoami")(login.whoami)
app.command("push")(remote.push)
app.command("pull")(remote.pull)
app.command("clone")(remote.clone_)
app.command("finetune")(train.finetune)
app.command("eval")(train.eval_)
app.command("fisher")(train.fisher)
model.app.command("select")(train.select)


def _version(value: bool) -> None:
    if value:
        console.print(f"fmforge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            envvar=STORE_ENV,
            help="Repository directory (default: the current directory or its nearest parent "
            "holding .fmforge/).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options."""


@app.command()
def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(help="Where to create .fmforge/ (default: --store or here).")
    ] = None,
    ledger_url: Annotated[
        str | None, typer.Option(help="postgresql://... for a shared ledger (default: SQLite).")
    ] = None,
    objects_url: Annotated[
        str | None, typer.Option(help="s3://BUCKET/PREFIX for shared objects (default: local).")
    ] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option(help="Endpoint of an S3-compatible service.")
    ] = None,
    import_file: Annotated[
        Path | None,
        typer.Option(
            "--import", help="Start from an `events export` file: the same chain, hash for hash."
        ),
    ] = None,
) -> None:
    """Create a repository (.fmforge/) with its ledger and object store."""
    if import_file is not None and not import_file.is_file():
        raise UsageError(f"{import_file}: no such file")
    target = directory or store_option(ctx) or Path.cwd()
    config = {
        "ledger.url": ledger_url,
        "objects.url": objects_url,
        "objects.s3_endpoint_url": s3_endpoint_url,
    }
    with ExitStack() as stack:
        records = None
        if import_file is not None:
            records = read_jsonl(stack.enter_context(open(import_file, "rb")), import_file)
        repo = stack.enter_context(Repository.init(target, config=config, records=records))
        if import_file is not None:
            console.print(f"imported {repo.ledger.count()} events from {import_file}")
        console.print(f"initialised {repo.path}")
        console.print(f"  ledger  {repo.ledger.url}")
        console.print(f"  objects {repo.objects.url}")


@app.command()
def log(
    ctx: typer.Context,
    stream: Annotated[
        str | None, typer.Option("--stream", "-s", help="Only streams starting with this prefix.")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only this event type (repeatable).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events recorded at or after this UTC ISO time.")
    ] = None,
    from_seq: Annotated[int, typer.Option(help="First seq to show.")] = 1,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Only the newest N (as git log -n).")
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Oldest first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """Show the ledger's events, newest first (as git log); --reverse for oldest first."""
    if limit is not None and limit < 0:
        raise UsageError(f"-n must be >= 0, got {limit}")
    with open_repository(ctx) as repo:
        start = from_seq
        if since:
            moment = _moment(since)
            start = max(start, repo.ledger.first_seq_at(moment))
        selected = repo.ledger.read_all(
            start, types=types or None, streams=stream, limit=limit, descending=True
        )
        rows: list[Event] = [e for e in selected if not since or e.time >= moment]
    if reverse:
        rows.reverse()
    if as_json:
        for event in rows:
            sys.stdout.buffer.write(orjson.dumps(event.to_record()) + b"\n")
        return
    table = Table("seq", "time (UTC)", "stream", "v", "type", "actor", "data", "hash")
    for event in rows:
        data = orjson.dumps(event.data).decode() if not event.redacted else "<redacted>"
        table.add_row(
            str(event.seq),
            event.time[:19].replace("T", " "),
            event.stream,
            str(event.version),
            event.type,
            str(event.meta.get("actor", "")),
            data if len(data) <= 60 else data[:57] + "...",
            event.hash.hex()[:12],
        )
    console.print(table)
    console.print(f"{len(rows)} event(s)")


@app.command()
def verify(
    ctx: typer.Context,
    objects: Annotated[
        bool, typer.Option("--objects/--no-objects", help="Also read back every referenced object.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="Processes for chain verification (default: automatic).")
    ] = None,
    tensors: Annotated[
        bool,
        typer.Option(
            "--tensors/--no-tensors", help="Also rebuild model tensors from their deltas."
        ),
    ] = True,
    quick: Annotated[
        bool, typer.Option("--quick", help="Rebuild a random sample of 64 tensors, not all.")
    ] = False,
    views: Annotated[
        bool,
        typer.Option(
            "--views/--no-views",
            help="Also rebuild every read model in a scratch database and compare it with "
            ".fmforge/views.db.",
        ),
    ] = True,
    rebuild_views: Annotated[
        bool,
        typer.Option("--rebuild-views", help="Rebuild every read model from the ledger first."),
    ] = False,
) -> None:
    """Recompute the hash chain, re-hash every referenced object, rebuild every model tensor
    through its delta chain and every read model from the ledger, checking each; exit 1 on
    the first fault, or when a read model differs (naming projection, table and key)."""
    with open_repository(ctx) as repo:
        if rebuild_views:
            rebuilt = repo.rebuild_views()
            console.print(
                f"rebuilt {len(rebuilt)} read models from the ledger: {', '.join(rebuilt)}"
            )
        report = repo.verify(objects=objects, workers=workers, views=views)
        check = verify_tensors(repo, quick=quick) if tensors else None
    console.print(
        f"ok: {report.events} events, chain verifies to head {report.head.hash.hex()}; "
        f"{report.objects_checked} referenced objects intact"
    )
    if check is not None:
        pruned = f" ({check.skipped_commits} pruned by gc skipped)" if check.skipped_commits else ""
        console.print(
            f"ok: {check.tensors} distinct tensors of {check.commits} model commits rebuilt "
            f"bit-exact{' (a sample)' if quick else ''}{pruned}"
        )
    if report.view_differences:
        for difference in report.view_differences[:50]:
            console.print(f"view differs: {difference}", markup=False)
        more = len(report.view_differences) - 50
        if more > 0:
            console.print(f"... and {more} more")
        raise UsageError(
            f"{len(report.view_differences)} row(s) of the read models in .fmforge/views.db "
            "differ from the ledger; `fmforge verify --rebuild-views` rebuilds them"
        )
    if views:
        console.print(f"ok: {report.views_checked} read models match a rebuild from the ledger")


@app.command()
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would go.")] = False,
    grace_period: Annotated[
        float | None,
        typer.Option(help="Spare objects younger than this many seconds (default: setting)."),
    ] = None,
    retention: Annotated[
        float | None,
        typer.Option(
            help="Keep model commits recorded or on a branch within this many seconds, "
            "besides all reachable from a branch or tag (default: setting gc.retention_s)."
        ),
    ] = None,
) -> None:
    """Delete stored objects that no event refers to, and those only old model commits outside
    every branch and tag use (recorded as an ObjectsPruned event)."""
    with open_repository(ctx) as repo:
        keep_for = repo.settings["gc.retention_s"] if retention is None else retention
        prune, commits = prunable_objects(repo, keep_for)
        report = repo.gc(
            grace_period_s=grace_period, dry_run=dry_run, prune=prune,
            reason=f"{len(commits)} model commits unreachable and older than {keep_for:g} s",
        )  # fmt: skip
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {report.deleted} object(s), {report.bytes_freed} bytes "
        f"({len(commits)} model commits outside every branch and tag and the retention window); "
        f"kept {report.kept}, spared {report.young} younger than the grace period"
    )
    if report.staged_removed or report.staged_young:
        console.print(
            f"{'would remove' if dry_run else 'removed'} {report.staged_removed} temporary "
            f"file(s) of interrupted writes, {report.staged_bytes} bytes; spared "
            f"{report.staged_young} younger than the grace period"
        )


@app.command("ui")
def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    heartbeat_timeout: Annotated[
        float,
        typer.Option(help="Seconds of silence after which a running run is recorded as lost."),
    ] = 90.0,
) -> None:
    """Serve the dashboard and MLflow's tracking API (MLFLOW_TRACKING_URI=http://HOST:PORT)."""
    import uvicorn

    from fmforge.server.app import create_app

    if heartbeat_timeout <= 0:
        raise UsageError(f"--heartbeat-timeout must be positive, got {heartbeat_timeout}")
    root = find_repository(store_option(ctx) or Path.cwd())
    console.print(f"serving {root} on http://{host}:{port} (MLflow API under /api/2.0/mlflow)")
    if host in ("0.0.0.0", "::"):
        console.print(
            "answering only the host names of setting server.allowed_hosts "
            "(loopback by default): add the names clients use to reach this machine"
        )
    app_ = create_app(root, heartbeat_timeout_s=heartbeat_timeout, bind_host=host)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("config")
def config_(ctx: typer.Context) -> None:
    """Show every setting: its value, where it came from, and what it does."""
    try:
        root_dir: Path | None = find_repository(store_option(ctx) or Path.cwd())
    except RepositoryNotFound:
        root_dir = None
    settings = load_settings(root_dir / ".fmforge" / "config.toml" if root_dir else None)
    table = Table("setting", "environment", "value", "source", "meaning")
    for setting in SETTINGS:
        table.add_row(
            setting.name,
            setting.env,
            repr(settings[setting.name]),
            settings.sources[setting.name],
            setting.help,
        )
    console.print(table)


@app.command()
def demo(
    keep: Annotated[
        Path | None,
        typer.Option(
            help="Run in this (new or empty) directory and keep it, instead of a temp dir."
        ),
    ] = None,
) -> None:
    """Run the main job end to end on the embedded default and print what it did."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise UsageError(f"{keep} is not empty")
        _run_demo(keep)
        console.print(f"\nkept the demo repository in {keep}")
        return
    with tempfile.TemporaryDirectory(prefix="fmforge-demo-") as tmp:
        _run_demo(Path(tmp))


def _run_demo(directory: Path) -> None:
    for number, (step, lines) in enumerate(run_demo(directory), 1):
        console.print(text((f"{number}. {step.title}", "bold")))
        for line in lines:
            console.print(f"   {line}")
    console.print(text(("demo finished", "bold green")))


def _moment(text: str) -> str:
    """An ISO date or time as the ledger writes times (UTC, microseconds, ``Z``)."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is not an ISO date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def main() -> None:
    app()
