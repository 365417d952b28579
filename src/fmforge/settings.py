"""Every setting fmforge reads, and the one place it reads them.

Precedence, highest first: environment variable, ``.fmforge/config.toml``, built-in default.
In ``config.toml`` a setting ``ledger.url`` is the key ``url`` of table ``[ledger]``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmforge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str

    @property
    def kind(self) -> type:
        return type(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ledger.url",
        "FMFORGE_LEDGER_URL",
        "",
        "Ledger location: empty for .fmforge/ledger.db (SQLite), sqlite:///PATH, "
        "or postgresql://USER:PASSWORD@HOST:PORT/DB for a shared PostgreSQL ledger.",
    ),
    Setting(
        "ledger.busy_timeout_s",
        "FMFORGE_LEDGER_BUSY_TIMEOUT_S",
        30.0,
        "Seconds a writer waits for another writer's lock before failing with 'ledger locked'.",
    ),
    Setting(
        "objects.url",
        "FMFORGE_OBJECTS_URL",
        "",
        "Object store location: empty for .fmforge/objects/, a directory, or s3://BUCKET/PREFIX.",
    ),
    Setting(
        "objects.s3_endpoint_url",
        "FMFORGE_S3_ENDPOINT_URL",
        "",
        "Endpoint of an S3-compatible service (MinIO, Ceph, ...); empty for AWS. Credentials come "
        "from the standard AWS environment variables or ~/.aws.",
    ),
    Setting(
        "objects.compression",
        "FMFORGE_OBJECTS_COMPRESSION",
        "auto",
        "'auto': zstd when a probe of the object shrinks by 3% or more; 'off': store raw.",
    ),
    Setting(
        "objects.zstd_level",
        "FMFORGE_OBJECTS_ZSTD_LEVEL",
        3,
        "zstd compression level (1-22) for compressed objects.",
    ),
    Setting(
        "gc.grace_period_s",
        "FMFORGE_GC_GRACE_PERIOD_S",
        3600.0,
        "gc never deletes an object younger than this many seconds, since its writer may not "
        "have recorded the event that refers to it yet.",
    ),
    Setting(
        "gc.retention_s",
        "FMFORGE_GC_RETENTION_S",
        30 * 86400.0,
        "gc keeps the objects of every model commit reachable from a branch or tag, and of any "
        "commit recorded, or pointed at by a branch, within this many seconds.",
    ),
    Setting(
        "user.name",
        "FMFORGE_USER",
        "",
        "Who you are, stamped as the actor of every event you record (as git's user.name); "
        "empty for the operating system's USER@HOST. A server stamps the principal of each "
        "request instead.",
    ),
    Setting(
        "server.allowed_hosts",
        "FMFORGE_SERVER_ALLOWED_HOSTS",
        "127.0.0.1,localhost,::1",
        "Comma-separated host names `fmforge ui` answers (any port), besides the one --host "
        "binds; a request with any other Host header is refused (403), which defeats DNS "
        "rebinding. '*' answers every name.",
    ),
    Setting(
        "server.max_body_bytes",
        "FMFORGE_SERVER_MAX_BODY_BYTES",
        4_000_000,
        "Largest request body `fmforge ui` reads; a larger one is refused (413). The default "
        "holds MLflow's largest valid log-batch (100 params and 100 tags at their length "
        "limits, and metrics).",
    ),
    Setting(
        "server.max_artifact_bytes",
        "FMFORGE_SERVER_MAX_ARTIFACT_BYTES",
        10 * 1024**3,
        "Largest artifact file an MLflow client may upload through `fmforge ui`'s artifact "
        "proxy (PUT /api/2.0/mlflow-artifacts/artifacts/...); a larger one is refused (413). "
        "It is streamed to disk, never held in memory.",
    ),
    Setting(
        "server.max_key_chars",
        "FMFORGE_SERVER_MAX_KEY_CHARS",
        250,
        "Longest metric, param or tag key the MLflow API accepts (MLflow's own limit).",
    ),
    Setting(
        "server.max_param_value_chars",
        "FMFORGE_SERVER_MAX_PARAM_VALUE_CHARS",
        6000,
        "Longest param value the MLflow API accepts (MLflow's own limit).",
    ),
    Setting(
        "server.max_tag_value_chars",
        "FMFORGE_SERVER_MAX_TAG_VALUE_CHARS",
        8000,
        "Longest tag value or run name the MLflow API accepts (MLflow's own limit).",
    ),
    Setting(
        "server.max_experiment_name_chars",
        "FMFORGE_SERVER_MAX_EXPERIMENT_NAME_CHARS",
        500,
        "Longest experiment (project) name the MLflow API accepts (MLflow's own limit).",
    ),
    Setting(
        "server.max_metrics_per_batch",
        "FMFORGE_SERVER_MAX_METRICS_PER_BATCH",
        1000,
        "Most metrics one MLflow log-batch request may carry (MLflow's own limit).",
    ),
    Setting(
        "server.max_params_tags_per_batch",
        "FMFORGE_SERVER_MAX_PARAMS_TAGS_PER_BATCH",
        100,
        "Most params, and most tags, one MLflow log-batch request may carry (MLflow's own limit).",
    ),
    Setting(
        "access.enabled",
        "FMFORGE_ACCESS_ENABLED",
        False,
        "Access control on: every public entry point and HTTP route is decided and recorded "
        "(AccessGranted / AccessDenied), and requests authenticate with a token. Off by default "
        "(a single user's embedded repository: nothing is decided, a read appends nothing); "
        "also on whenever a policy is in force (`fmforge access policy set`) unless the policy "
        "says enabled: false.",
    ),
    Setting(
        "access.key_file",
        "FMFORGE_ACCESS_KEY_FILE",
        "",
        "The repository key (32 random bytes, mode 0600) that wraps each data subject's "
        "encryption key; empty for .fmforge/keys/repository.key. Keep it outside the object "
        "store and out of backups of the ledger: whoever holds it and the key table can "
        "decrypt personal data that has not been forgotten.",
    ),
    Setting(
        "audit.signing_key_file",
        "FMFORGE_AUDIT_SIGNING_KEY_FILE",
        "",
        "The Ed25519 key (mode 0600) that signs checkpoints of the ledger's Merkle tree; empty "
        "for .fmforge/keys/checkpoint.key (created by the first `fmforge audit checkpoint`, "
        "its public verifier key beside it as checkpoint.pub).",
    ),
    Setting(
        "audit.origin",
        "FMFORGE_AUDIT_ORIGIN",
        "",
        "The origin line of signed checkpoints and the signing key's name; empty for "
        "fmforge/ followed by 16 hex digits of the ledger's first event hash.",
    ),
    Setting(
        "audit.checkpoint_every_events",
        "FMFORGE_AUDIT_CHECKPOINT_EVERY_EVENTS",
        10_000,
        "A checkpoint is due once this many events were recorded since the last one.",
    ),
    Setting(
        "audit.checkpoint_every_s",
        "FMFORGE_AUDIT_CHECKPOINT_EVERY_S",
        60.0,
        "A checkpoint is due once this many seconds passed since the last one (and events "
        "were recorded); one is always signed after an access-control change.",
    ),
    Setting(
        "audit.export_dir",
        "FMFORGE_AUDIT_EXPORT_DIR",
        "",
        "A directory every checkpoint is also written to (<size>.checkpoint and "
        "latest.checkpoint); empty for none.",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}

STORE_ENV = "FMFORGE_STORE"
"""Names the repository directory (the one holding ``.fmforge/``); not a config-file setting."""


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False, "": False}  # fmt: skip


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    kind = setting.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in _BOOLEANS:
                return _BOOLEANS[word]
            raise ValueError(word)
        if kind is float:
            return float(value)
        if kind is int:
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {setting.name} from {source} must be {kind.__name__}, got {value!r}"
        ) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Flatten ``config.toml`` to dotted names; unknown keys are an error (typos must not pass)."""
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    flat: dict[str, Any] = {}

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(f"{name}.", value)
            elif name not in BY_NAME:
                raise ConfigError(f"{path}: unknown setting {name!r} (see `fmforge config`)")
            else:
                flat[name] = _coerce(BY_NAME[name], value, str(path))

    walk("", raw)
    return flat


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def load_settings(config_path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    from_file = read_config_file(config_path) if config_path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = _coerce(setting, environ[setting.env], setting.env)
            sources[setting.name] = f"env {setting.env}"
        elif setting.name in from_file:
            values[setting.name] = from_file[setting.name]
            sources[setting.name] = str(config_path)
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
    return Settings(values, sources)


def render_config_toml(values: Mapping[str, Any]) -> str:
    """A config.toml holding ``values`` (dotted names), grouped by table."""
    tables: dict[str, list[str]] = {}
    for name, value in values.items():
        table, _, key = name.rpartition(".")
        literal = json.dumps(value) if isinstance(value, str | bool) else repr(value)
        tables.setdefault(table, []).append(f"{key} = {literal}")
    parts = []
    # Top-level keys must come before the first [table] header.
    for table, lines in sorted(tables.items(), key=lambda item: item[0] != ""):
        parts.append((f"[{table}]\n" if table else "") + "\n".join(lines) + "\n")
    return "\n".join(parts)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and events."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
