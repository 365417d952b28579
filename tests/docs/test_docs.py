"""What users read must match what exists: settings, CLI commands, the public API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_the_events_table_lists_every_registered_type() -> None:
    from fmforge.events import REGISTRY

    text = (ROOT / "docs" / "cli.md").read_text()
    section = text[text.index("## Events") :]
    for domain in REGISTRY.domains:
        (row,) = [line for line in section.splitlines() if line.startswith(f"| {domain.name} |")]
        listed = set(re.findall(r"`([A-Z][A-Za-z]+)`", row))
        assert listed == {t.name for t in domain.types}, domain.name
        for stream in domain.streams:
            assert f"`{stream}" in row, stream


def test_the_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ledger example, as written, on a fresh repository."""
    from fmforge.repository import Repository

    text = (ROOT / "README.md").read_text()
    start = text.index("The ledger itself from Python")
    block = text[
        text.index("```python", start) + len("```python") : text.index("```\n", start + 40)
    ]
    Repository.init(tmp_path).close()
    (tmp_path / "labeling-guide.pdf").write_bytes(b"%PDF-1.4 guide")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    with Repository.open(tmp_path) as repo:
        (event,) = list(repo.ledger.read_stream("notes/labeling-guide"))
        assert event.meta["actor"] == "tester@fmforge"
