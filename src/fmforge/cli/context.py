"""What every command shares: the repository it works on and the consoles it prints to.

The consoles never read what they print as markup or emoji codes: model and branch names,
messages, dataset cells, run names, metric names and error messages come from users and data,
and ``[red]x[/red]``, ``[/bold]`` or ``:warning:`` in them must print as typed (an unbalanced tag
would otherwise crash the command). Styled output is built from literal pieces with ``text``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from fmforge.errors import FmforgeError
from fmforge.repository import Repository

# soft_wrap: long lines stay whole, so output can be grepped and piped. markup and emoji off:
# every string printed (table cells included) is literal text.
console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def text(*parts: str | tuple[str, str]) -> Text:
    """One line from literal pieces, each a string or (string, style), never parsed as markup:
    ``text(("v3", "bold"), " ", message)``."""
    return Text.assemble(*parts)


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
