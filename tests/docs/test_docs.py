"""What users read must match what exists: settings, CLI commands, the public API."""

from __future__ import annotations

import re
from pathlib import Path

from fmforge.cli.app import app
from fmforge.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    import typer.main

    names: list[str] = []
    root = typer.main.get_command(app)
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        if sub:
            names += [f"{name} {child}" for child in sub]
        else:
            names.append(name)
    return sorted(names)


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.name}`" in text, setting.name
        assert f"`{setting.env}`" in text, setting.env


def test_every_cli_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for command in _commands():
        assert f"fmforge {command}" in text, command


def test_readme_gives_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text
    assert "make test" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
