"""Every option of ``fmforge finetune`` (each a ``FinetuneSpec`` or, with ``--auto``, a
``SearchSpec`` field) is documented."""

from __future__ import annotations

from pathlib import Path

from fmforge.training.spec import FinetuneSpec

ROOT = Path(__file__).resolve().parents[2]


def test_every_finetune_spec_field_is_documented_in_the_finetune_row() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `fmforge finetune ")]
    (row,) = [r for r in rows if not r.startswith("| `fmforge finetune --auto")]
    for name in FinetuneSpec.model_fields:
        assert f"`--{name.replace('_', '-')}" in row, name
    for option in ("--nproc", "--resume", "--no-resume", "--name", "--json"):
        assert f"`{option}" in row, option


def test_every_search_option_is_documented_in_the_auto_row() -> None:
    from fmforge.training.search import SearchSpec

    text = (ROOT / "docs" / "cli.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| `fmforge finetune --auto")]
    for name in SearchSpec.model_fields:
        assert f"--{name.replace('_', '-')}" in row, name
