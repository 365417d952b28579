"""``fmforge events``: record outside facts, export and import the ledger."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer

from fmforge.cli.context import FmforgeGroup, console, open_repository
from fmforge.errors import UsageError
from fmforge.ledger import NewEvent

app = typer.Typer(
    cls=FmforgeGroup, help="Append, export and import raw events.", no_args_is_help=True
)


def read_jsonl(handle: IO[bytes], name: object) -> Iterator[Any]:
    """Records of a JSON Lines file; a malformed line is an error naming file and line."""
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{name}:{number}: not JSON: {exc}") from None


@app.command("append")
def append(
    ctx: typer.Context,
    stream: Annotated[str, typer.Argument(help="Stream name, e.g. 'dataset/reviews'.")],
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="Past-tense event type.")],
    data: Annotated[str, typer.Option("--data", help="Payload as a JSON object.")] = "{}",
    expected_version: Annotated[
        int | None, typer.Option(help="Refuse unless the stream is at this version (0: new).")
    ] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Idempotency key (UUID); a retry with it writes nothing.")
    ] = None,
    schema_version: Annotated[int, typer.Option(help="Schema version of the payload.")] = 1,
) -> None:
    """Append one event recording a fact from outside fmforge."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("--data must be a JSON object, e.g. '{\"key\": 1}'")
    kwargs: dict[str, Any] = {"schema_version": schema_version}
    if event_id:
        kwargs["event_id"] = event_id
    with open_repository(ctx) as repo:
        result = repo.ledger.append(
            stream, NewEvent(event_type, payload, **kwargs), expected_version=expected_version
        )
    note = " (already recorded: nothing written)" if result.deduplicated else ""
    console.print(f"seq {result.first_seq}  {stream} v{result.version}{note}")


@app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="JSONL file; standard output if omitted.")
    ] = None,
    from_seq: Annotated[int, typer.Option(help="First seq to export.")] = 1,
) -> None:
    """Write every event as JSON Lines, one event per line with its hashes."""
    with open_repository(ctx) as repo, ExitStack() as stack:
        handle = stack.enter_context(open(output, "wb")) if output else sys.stdout.buffer
        for record in repo.ledger.export_records(from_seq):
            handle.write(orjson.dumps(record) + b"\n")
        handle.flush()
        if output:
            console.print(f"exported {repo.ledger.head().seq - from_seq + 1} events to {output}")


@app.command("import")
def import_(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="JSONL file from `events export`; - for stdin.")],
) -> None:
    """Append exported events, reproducing their seq and hashes exactly."""
    if str(source) != "-" and not source.is_file():
        raise UsageError(f"{source}: no such file")
    with open_repository(ctx) as repo, ExitStack() as stack:
        handle = sys.stdin.buffer if str(source) == "-" else stack.enter_context(open(source, "rb"))
        count = repo.ledger.import_records(read_jsonl(handle, source))
        head = repo.ledger.head()
    console.print(f"imported {count} events; head seq {head.seq} hash {head.hash.hex()}")
