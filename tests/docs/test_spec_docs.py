"""The YAML formats in docs/cli.md match the code: every cleaning rule kind and option, every
labeling-function field."""

from __future__ import annotations

from pathlib import Path

from fmforge.data import rulespec
from fmforge.data.cleaning import _KINDS
from fmforge.data.labeling.functions import LFSpec

ROOT = Path(__file__).resolve().parents[2]


def _section(title: str) -> str:
    text = (ROOT / "docs" / "cli.md").read_text()
    start = text.index(f"### {title}")
    end = text.find("\n#", start + 1)
    return text[start:end]


def test_every_rule_kind_and_option_is_documented() -> None:
    section = _section("Cleaning rules")
    for kind in _KINDS:
        assert f"`{kind}`" in section, kind
    models = [
        rulespec.DedupOptions, rulespec.NearDedupOptions, rulespec.FilterOptions,
        rulespec.RedactOptions, rulespec.LanguageOptions, rulespec.PythonOptions,
    ]  # fmt: skip
    for model in models:
        for option in model.model_fields:
            assert f"`{option}`" in section, (model.__name__, option)
        assert f"  - {model.__doc__.split('``')[1]}: " in section, model.__name__  # an example


def test_every_lf_field_is_documented() -> None:
    section = _section("Labeling functions")
    for name in LFSpec.model_fields:
        assert f"| `{name}` |" in section, name
    for kind in ("keywords", "regex", "exemplars", "min", "default"):
        assert f"    {kind}:" in section, kind  # an example of each kind
