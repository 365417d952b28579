"""``fmforge serve`` (one base, many adapters, an OpenAI-compatible API) and
``fmforge deployment`` (what deployments ran, and rolling one back)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmforge.cli.context import FmforgeGroup, console, open_repository, store_option
from fmforge.errors import UsageError
from fmforge.repository import find_repository

app = typer.Typer(
    cls=FmforgeGroup, help="Deployments of `fmforge serve`: list, show, roll back.",
    no_args_is_help=True,
)  # fmt: skip

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_bytes(text: str, option: str) -> int:
    """A size: a number with an optional unit (``512MiB``, ``2GB``, ``1048576``)."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"{option}: cannot read {text!r} as a size (e.g. 512MiB, 2GB, 1048576)")
    unit = (match[2] or "").lower()
    letter = unit[:1] if unit[:1] != "b" else ""
    power = "kmgt".index(letter) + 1 if letter else 0
    return int(float(match[1]) * (1024 if "i" in unit else 1000) ** power)


def serve(
    ctx: typer.Context,
    base: Annotated[str, typer.Argument(metavar="BASE@REF", help="The base model to serve.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME@REF",
            help="An adapter to preload and keep in memory (repeatable); any other adapter of "
            "the base loads on its first request.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    name: Annotated[
        str | None, typer.Option(help="Deployment name (default: the base's); replicas share it.")
    ] = None,
    replica: Annotated[
        str | None, typer.Option(help="This replica's id (default HOST-PID).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16...")
    ] = "auto",
    max_batch: Annotated[int, typer.Option(help="Most sequences in the running batch.")] = 64,
    max_rank: Annotated[int, typer.Option(help="Largest LoRA rank a slot holds.")] = 16,
    lora_targets: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated module names to serve LoRA on (default: the adapters')."
        ),
    ] = None,
    device_cache: Annotated[str, typer.Option(help="Bytes of device slots.")] = "256MiB",
    host_cache: Annotated[str, typer.Option(help="Bytes of adapters kept in memory.")] = "2GiB",
    disk_cache: Annotated[str, typer.Option(help="Bytes of adapters kept on local disk.")] = "8GiB",
    max_queued: Annotated[int, typer.Option(help="Waiting requests before 429.")] = 1024,
    max_queued_per_adapter: Annotated[
        int | None, typer.Option(help="Waiting requests of one adapter before 429.")
    ] = None,
    queue_timeout: Annotated[float, typer.Option(help="Seconds a request may wait.")] = 60.0,
    cycle_time: Annotated[
        float, typer.Option(help="Seconds an adapter keeps a busy slot while others wait for one.")
    ] = 2.0,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="Longest prompt accepted.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    purpose: Annotated[
        str | None,
        typer.Option(
            help="What the models are used for (commercial, research, ...): licences "
            "and consent are checked for it when access control is on."
        ),
    ] = None,
) -> None:
    """Serve BASE@REF and its adapters over an OpenAI-compatible API (/v1/completions,
    /v1/chat/completions, /v1/embeddings, /v1/classify, /v1/models, /health, /metrics)."""
    import uvicorn

    from fmforge.serving.api import create_serving_app
    from fmforge.serving.deployment import Deployment, ServingConfig

    for option, value in (("--max-batch", max_batch), ("--max-rank", max_rank),
                          ("--max-queued", max_queued)):  # fmt: skip
        if value < 1:
            raise UsageError(f"{option} must be at least 1, got {value}")
    if queue_timeout <= 0 or cycle_time < 0:
        raise UsageError("--queue-timeout must be positive and --cycle-time not negative")
    root = find_repository(store_option(ctx) or Path.cwd())
    targets = (
        tuple(t.strip() for t in lora_targets.split(",") if t.strip()) if lora_targets else None
    )
    config = ServingConfig(
        deployment=name, replica=replica, device=device, dtype=dtype, max_batch=max_batch,
        max_rank=max_rank, lora_targets=targets,
        device_cache_bytes=parse_bytes(device_cache, "--device-cache"),
        host_cache_bytes=parse_bytes(host_cache, "--host-cache"),
        disk_cache_bytes=parse_bytes(disk_cache, "--disk-cache"),
        max_queued=max_queued, max_queued_per_adapter=max_queued_per_adapter,
        queue_timeout_s=queue_timeout, cycle_time_s=cycle_time,
        max_prompt_tokens=max_prompt_tokens, threads=threads, purpose=purpose,
    )  # fmt: skip
    deployment = Deployment(root, base, adapter or [], config)
    deployment.start()  # errors (a missing base, an incompatible adapter) end the command here
    console.print(
        f"serving {base} ({deployment.base_commit[:12]}) as deployment {deployment.name}, "
        f"replica {deployment.replica}, on http://{host}:{port}/v1"
    )
    # The app's shutdown stops the deployment (uvicorn re-raises SIGTERM once it is done).
    app_ = create_serving_app(deployment, bind_host=host)
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    finally:
        deployment.stop()


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """Every deployment, with its base and running replicas."""
    from fmforge.serving.views import DeploymentsView

    with open_repository(ctx) as repo:
        index = repo.view(DeploymentsView)
        table = Table("deployment", "base", "replicas running", "replicas stopped", "pins")
        for deployment in index.names():
            replicas = index.replicas(deployment)
            running = [r.replica for r in replicas if r.running]
            table.add_row(
                deployment, replicas[-1].base if replicas else "", ", ".join(running) or "-",
                str(len(replicas) - len(running)), str(len(index.pins(deployment))),
            )  # fmt: skip
        console.print(table)


@app.command("show")
def show(
    ctx: typer.Context, deployment: Annotated[str, typer.Argument(help="Deployment name.")]
) -> None:
    """A deployment's replicas, what they hold, and its pins."""
    from fmforge.serving.views import DeploymentsView

    with open_repository(ctx) as repo:
        index = repo.view(DeploymentsView)
        index.check(deployment)
        for r in index.replicas(deployment):
            state = "running" if r.running else f"stopped {r.stopped}"
            base = f"{r.base} ({r.base_commit[:12]})"
            console.print(f"replica {r.replica}: {base}, started {r.started}, {state}")
            for item in r.adapters:
                console.print(f"  declares {item['ref']} ({item['commit'][:12]})")
        for replica, adapter, _content, tier in index.residency(deployment):
            model, _, commit = adapter.partition("@")
            console.print(f"{replica} holds {model}@{commit[:12]} in {tier}")
        for (model, ref), pin in sorted(index.pins(deployment).items()):
            console.print(f"pin: {model}@{ref} serves {pin.commit[:12]} (rolled back)")


@app.command("rollback")
def rollback_(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument(help="Deployment name.")],
    adapter: Annotated[str, typer.Argument(metavar="NAME@REF", help="The reference to pin.")],
    to: Annotated[
        str | None,
        typer.Argument(
            metavar="[REF]", help="What it serves now (default: the branch's previous position)."
        ),
    ] = None,
) -> None:
    """Make every replica of DEPLOYMENT answer NAME@REF with an earlier version, until the
    branch moves again."""
    from fmforge.serving.rollback import rollback

    with open_repository(ctx) as repo:
        result = rollback(repo, deployment, adapter, to)
    console.print(
        f"deployment {result.deployment}: {result.model}@{result.ref} now serves "
        f"{result.commit[:12]} (was {result.previous[:12]}) until {result.ref} moves again"
    )
