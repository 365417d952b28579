"""What every command shares: the repository it works on and the consoles it prints to.

The consoles never read what they print as markup or emoji codes: model and branch names,
messages, dataset cells, run names, metric names and error messages come from users and data,
and ``[red]x[/red]``, ``[/bold]`` or ``:warning:`` in them must print as typed (an unbalanced tag
would otherwise crash the command). Styled output is built from literal pieces with ``text``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

try:  # typer 0.2x vendors click; older typers use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors  # type: ignore[no-redef]

from fmforge.access.mediation import via
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
    """The one place errors become output: an ``FmforgeError`` is one line on stderr, exit 1;
    a command line that does not parse (unknown option, missing argument) is one line too,
    exit 2, as git does."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with via("cli"):  # access events say the calls came through the CLI
                return super().invoke(ctx)
        except FmforgeError as exc:
            err_console.print(f"fmforge: error: {_one_line(str(exc))}", markup=False)
            raise typer.Exit(1) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(FmforgeGroup, self).main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run()
        try:
            result = run()
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "fmforge"
            err_console.print(
                f"fmforge: error: {_one_line(exc.format_message())} (see `{where} --help`)",
                markup=False,
            )
            sys.exit(2)
        except click_errors.ClickException as exc:
            err_console.print(f"fmforge: error: {_one_line(exc.format_message())}", markup=False)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            err_console.print("fmforge: aborted", markup=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def store_option(ctx: typer.Context) -> Path | None:
    store: Path | None = ctx.find_root().params.get("store")
    return store


def open_repository(ctx: typer.Context) -> Repository:
    return Repository.open(store_option(ctx))
