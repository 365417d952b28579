"""Every option of ``fmforge finetune`` (each a ``FinetuneSpec`` field) is documented."""

from __future__ import annotations

from pathlib import Path

from fmforge.training.spec import FinetuneSpec

ROOT = Path(__file__).resolve().parents[2]


def test_every_finetune_spec_field_is_documented_in_the_finetune_row() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| `fmforge finetune ")]
    for name in FinetuneSpec.model_fields:
        assert f"`--{name.replace('_', '-')}" in row, name
    for option in ("--nproc", "--resume", "--no-resume", "--name", "--json"):
        assert f"`{option}" in row, option
