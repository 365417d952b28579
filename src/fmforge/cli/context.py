"""What every command shares: the repository it works on and the consoles it prints to."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from rich.console import Console

from fmforge.errors import FmforgeError
from fmforge.repository import Repository

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class CliError(click.ClickException):
    """A user-facing failure: one line on stderr, exit status 1, no traceback."""

    exit_code = 1

    def show(self, file: object = None) -> None:
        err_console.print(f"fmforge: error: {self.message}", markup=False, soft_wrap=True)


class FmforgeGroup(typer.core.TyperGroup):
    """Turns any ``FmforgeError`` raised by a command into a ``CliError``, in one place."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FmforgeError as exc:
            raise CliError(str(exc)) from None


def store_option(ctx: typer.Context) -> Path | None:
    store: Path | None = ctx.find_root().params.get("store")
    return store


def open_repository(ctx: typer.Context) -> Repository:
    return Repository.open(store_option(ctx))
