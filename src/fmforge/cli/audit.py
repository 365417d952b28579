"""``fmforge audit``: signed checkpoints, inclusion and consistency proofs, the access log."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from fmforge.access import queries
from fmforge.access.audit import (
    Checkpointer,
    prove_inclusion,
    signing_key,
    signing_key_path,
    verify_history,
)
from fmforge.access.checkpoints import Checkpoint, DirectorySink, VerifierKey
from fmforge.cli.access import principal_name
from fmforge.cli.context import FmforgeGroup, console, open_repository
from fmforge.errors import UsageError
from fmforge.repository import Repository

app = typer.Typer(
    cls=FmforgeGroup,
    help="Signed checkpoints, proofs, and who accessed what.",
    no_args_is_help=True,
)


def _epoch(text: str | None, option: str, default: float) -> float:
    if text is None:
        return default
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _read_note(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{option} {path}: not a UTF-8 signed note") from None
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None


def _verifiers(repo: Repository, keys: list[str] | None) -> list[VerifierKey]:
    if not keys:
        return [signing_key(repo).verifier]
    out = []
    for key in keys:
        path = Path(key)
        text = path.read_text() if path.is_file() else key
        out.append(VerifierKey.parse(text))
    return out


@app.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    export: Annotated[
        Path | None,
        typer.Option(help="Also write it to this directory (besides audit.export_dir)."),
    ] = None,
) -> None:
    """Sign a checkpoint of the ledger now (creating the signing key on first use)."""
    with open_repository(ctx) as repo:
        checkpointer = Checkpointer(repo)
        if export is not None:
            checkpointer.sinks.append(DirectorySink(export))
        signed = checkpointer.checkpoint("manual")
        key_path = signing_key_path(repo)
        verifier = checkpointer.key.verifier.encode()
    console.print(signed.note, end="")
    console.print(f"signed size {signed.size}; verifier key {verifier}")
    console.print(f"(also in {key_path.with_suffix('.pub')})")
    if export is not None:
        console.print(f"exported to {export}")


@app.command("key")
def key(ctx: typer.Context) -> None:
    """The verifier key of this repository's checkpoints (give it to whoever checks them)."""
    with open_repository(ctx) as repo:
        console.print(signing_key(repo).verifier.encode())


@app.command("prove")
def prove(
    ctx: typer.Context,
    seq: Annotated[int, typer.Option("--seq", help="The event to prove.")],
    checkpoint_file: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="Against this checkpoint (default: the newest covering it)."
        ),
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Verifier key or its file (default: ours).")
    ] = None,
) -> None:
    """The inclusion proof of event SEQ in a signed checkpoint, as JSON (verified first)."""
    with open_repository(ctx) as repo:
        given = None
        if checkpoint_file is not None:
            note = _read_note(checkpoint_file, "--checkpoint")
            given = Checkpoint.open(note, _verifiers(repo, key))
        proof = prove_inclusion(repo, seq, given)
    sys.stdout.write(orjson.dumps(proof.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command("verify")
def verify(
    ctx: typer.Context,
    from_file: Annotated[Path, typer.Option("--from", help="An older checkpoint you kept.")],
    to_file: Annotated[
        Path | None, typer.Option("--to", help="A newer checkpoint (default: the ledger now).")
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Verifier key or its file (default: ours).")
    ] = None,
    chain: Annotated[
        bool, typer.Option("--chain/--no-chain", help="Also verify the hash chain first.")
    ] = True,
) -> None:
    """Prove that the ledger (or the checkpoint --to) extends the checkpoint --from: a
    history rewritten, truncated or forked behind it fails, naming what does not hold."""
    with open_repository(ctx) as repo:
        verifiers = _verifiers(repo, key)
        old = Checkpoint.open(_read_note(from_file, "--from"), verifiers)
        new = Checkpoint.open(_read_note(to_file, "--to"), verifiers) if to_file else None
        if chain:
            repo.ledger.verify()
        report = verify_history(repo, old, new)
    console.print(
        f"ok: size {report.new.size} extends checkpoint size {report.old.size} "
        f"({len(report.proof)}-hash consistency proof); both signed by "
        f"{', '.join(v.name for v in verifiers)}"
    )


@app.command("who-read")
def who_read(
    ctx: typer.Context,
    resource: Annotated[str, typer.Argument(help="dataset/NAME, dataset/NAME@VER, model/NAME...")],
    since: Annotated[str | None, typer.Option(help="From this UTC ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC ISO time.")] = None,
) -> None:
    """Who was allowed to read RESOURCE in the window, from the access log."""
    start = _epoch(since, "--since", 0.0)
    end = _epoch(until, "--until", float("inf"))
    with open_repository(ctx) as repo:
        readers = queries.who_read(repo, resource, start, end)
    table = Table("principal", "reads", "first (UTC)", "last (UTC)")
    for r in readers:
        table.add_row(r.principal, str(r.reads), _when(r.first), _when(r.last))
    console.print(table)
    console.print(f"{len(readers)} principal(s)")


@app.command("denied")
def denied(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this principal.")] = None,
    since: Annotated[str | None, typer.Option(help="From this UTC ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC ISO time.")] = None,
    limit: Annotated[int, typer.Option("-n", help="At most this many, newest first.")] = 100,
) -> None:
    """Denied requests, newest first, with their reason codes."""
    start = _epoch(since, "--since", 0.0)
    end = _epoch(until, "--until", float("inf"))
    who = principal_name(actor) if actor and actor != "anonymous" else actor
    with open_repository(ctx) as repo:
        records = queries.denied(repo, who, start, end, limit)
    table = Table("seq", "time (UTC)", "principal", "action", "resource", "reason")
    for r in records:
        table.add_row(str(r.seq), _when(r.time), r.principal, r.action, r.resource, r.reason)
    console.print(table)
    console.print(f"{len(records)} denial(s)")


@app.command("could-read")
def could_read(
    ctx: typer.Context,
    resource: Annotated[str, typer.Argument(help="e.g. dataset/youtube@3")],
    at: Annotated[str | None, typer.Option(help="As the policy stood at this UTC time.")] = None,
    action: Annotated[str, typer.Option(help="The action asked about.")] = "read",
    purpose: Annotated[str | None, typer.Option(help="The purpose of the request.")] = None,
) -> None:
    """Who could do ACTION on RESOURCE (now, or --at a past time): the policy replayed."""
    moment = _epoch(at, "--at", 0.0) if at is not None else None
    with open_repository(ctx) as repo:
        decisions = queries.could_read(repo, resource, at=moment, action=action, purpose=purpose)
    allowed = [d for d in decisions if d.allowed]
    for d in allowed:
        masked = f" (masked: {', '.join(d.masked)})" if d.masked else ""
        console.print(f"{d.principal}  {d.reason}{masked}")
    console.print(f"{len(allowed)} of {len(decisions)} principal(s) could {action} {resource}")
