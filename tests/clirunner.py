"""Running the real CLI app in-process, on a given repository."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fmforge.cli.app import app

runner = CliRunner()


def fm(store: Path, *args: str) -> tuple[int, str]:
    """Exit code and output of `fmforge --store STORE ARGS...`; unexpected errors propagate."""
    result = runner.invoke(app, ["--store", str(store), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
