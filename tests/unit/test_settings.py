from __future__ import annotations

from pathlib import Path

import pytest

from fmforge.errors import ConfigError
from fmforge.settings import SETTINGS, load_settings, redact_url, render_config_toml


class TestSettings:
    def test_precedence_env_over_file_over_default(self, tmp_path: Path) -> None:
        config = tmp_path / "config.toml"
        config.write_text(render_config_toml({"gc.grace_period_s": 60.0, "user.name": "file"}))
        settings = load_settings(config, {"FMFORGE_USER": "env"})
        assert settings["user.name"] == "env"
        assert settings.sources["user.name"] == "env FMFORGE_USER"
        assert settings["gc.grace_period_s"] == 60.0
        assert settings.sources["gc.grace_period_s"] == str(config)
        assert settings["objects.compression"] == "auto"
        assert settings.sources["objects.compression"] == "default"

    def test_unknown_key_is_an_error_naming_it(self, tmp_path: Path) -> None:
        config = tmp_path / "config.toml"
        config.write_text("[ledger]\nurll = 'x'\n")
        with pytest.raises(ConfigError, match=r"unknown setting 'ledger\.urll'"):
            load_settings(config, {})

    def test_wrong_type_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="FMFORGE_GC_GRACE_PERIOD_S"):
            load_settings(None, {"FMFORGE_GC_GRACE_PERIOD_S": "soon"})

    def test_broken_toml_is_an_error(self, tmp_path: Path) -> None:
        config = tmp_path / "config.toml"
        config.write_text("[ledger\n")
        with pytest.raises(ConfigError, match=r"config\.toml"):
            load_settings(config, {})

    def test_every_setting_has_an_env_var_and_help(self) -> None:
        for setting in SETTINGS:
            assert setting.env.startswith("FMFORGE_")
            assert len(setting.help) > 20

    def test_rendered_config_reads_back(self, tmp_path: Path) -> None:
        values = {
            "user.name": 'quote " me',
            "ledger.url": "postgresql://u@h/db",
            "objects.zstd_level": 7,
        }
        config = tmp_path / "config.toml"
        config.write_text(render_config_toml(values))
        settings = load_settings(config, {})
        assert {k: settings[k] for k in values} == values

    def test_passwords_are_redacted(self) -> None:
        assert redact_url("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
