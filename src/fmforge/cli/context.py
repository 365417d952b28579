"""What every command shares: the repository it works on and the consoles it prints to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fmforge.errors import FmforgeError
from fmforge.repository import Repository

# soft_wrap: long lines stay whole, so output can be grepped and piped.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class FmforgeGroup(typer.core.TyperGroup):
    """The one place errors become output: an ``FmforgeError`` is one line on stderr, exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FmforgeError as exc:
            err_console.print(f"fmforge: error: {exc}", markup=False)
            raise typer.Exit(1) from None


def store_option(ctx: typer.Context) -> Path | None:
    store: Path | None = ctx.find_root().params.get("store")
    return store


def open_repository(ctx: typer.Context) -> Repository:
    return Repository.open(store_option(ctx))
