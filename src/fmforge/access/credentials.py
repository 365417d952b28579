"""API tokens a client keeps for the servers it talks to: ``fmforge login URL`` /
``fmforge logout URL``.

The tokens live in ``$XDG_CONFIG_HOME/fmforge/credentials.toml`` (``~/.config/fmforge/``
without it), one table per server URL (scheme, host and port, lower case, no path)::

    ["https://fmforge.example.org"]
    token = "fmf_..."
    principal = "user:ann"

The file is written whole to a temporary file created with mode 0600 (in a directory of
mode 0700) and renamed over the old one, so it is never readable by others, not even for a
moment; a file that group or others may read is refused, as ssh refuses such a key.
``FMFORGE_TOKEN``, when set, overrides every stored token (``token_for``).

A token is checked against the server (``whoami``: ``GET /api/whoami`` with it as Bearer)
before it is stored. Requests never follow redirects: the token goes only to the URL named.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fmforge.access.mediation import TOKEN_ENV
from fmforge.errors import ConfigError, Unauthenticated, UsageError

FILE = "credentials.toml"
TIMEOUT_S = 10.0


def credentials_path() -> Path:
    """``$XDG_CONFIG_HOME/fmforge/credentials.toml`` (``~/.config`` without it)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fmforge" / FILE


def server_url(text: str) -> str:
    """The key a server's token is stored under: ``scheme://host[:port]``, lower case."""
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{text!r} is not a server URL (http://HOST[:PORT] or https://...)")
    if parts.username or parts.password:
        raise UsageError(f"{parts.scheme}://... with a user or password in it: give the URL alone")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise UsageError(f"{text!r}: a server URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{text!r}: the port is not a number from 0 to 65535") from None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}{f':{port}' if port is not None else ''}"


def load(path: Path | None = None) -> dict[str, dict[str, str]]:
    """The stored credentials, by server URL (empty without a file)."""
    path = path or credentials_path()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return {}
    if mode & 0o077:
        raise ConfigError(f"{path} may be read by others (mode {mode:o}): chmod 600 it")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    out: dict[str, dict[str, str]] = {}
    for url, entry in data.items():
        if isinstance(entry, dict) and isinstance(entry.get("token"), str):
            out[url] = {k: v for k, v in entry.items() if isinstance(v, str)}
    return out


def _quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string (no "\/" is ever written)


def save(entries: dict[str, dict[str, str]], path: Path | None = None) -> Path:
    """Write ``entries`` (mode 0600, atomically); returns the file."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = []
    for url in sorted(entries):
        lines.append(f"[{_quoted(url)}]")
        lines += [f"{key} = {_quoted(value)}" for key, value in sorted(entries[url].items())]
        lines.append("")
    temporary = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and if the file was left behind before
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def token_for(url: str) -> str | None:
    """The token to send to ``url``: ``FMFORGE_TOKEN`` if set, else the stored one."""
    return os.environ.get(TOKEN_ENV) or load().get(server_url(url), {}).get("token")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is answered as an error: the token goes nowhere else


@dataclass(frozen=True)
class Identity:
    principal: str
    token_id: str | None
    via: str


def whoami(url: str, token: str) -> Identity:
    """Who ``token`` is on the server at ``url`` (``Unauthenticated`` when it refuses it;
    ``ConfigError`` when it cannot be reached or does not answer as fmforge)."""
    base = server_url(url)
    request = urllib.request.Request(
        base + "/api/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read(65536))
    except urllib.error.HTTPError as exc:
        message = _message(exc)
        if exc.code == 401:
            raise Unauthenticated("refused", f"{base} refused the token: {message}") from None
        raise ConfigError(f"{base} answered HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"cannot reach {base}: {reason}") from None
    except ValueError:
        raise ConfigError(f"{base} is not an fmforge server (GET /api/whoami: not JSON)") from None
    if not isinstance(body, dict) or not isinstance(body.get("principal"), str):
        raise ConfigError(f"{base} is not an fmforge server (GET /api/whoami)")
    token_id = body.get("token_id")
    return Identity(
        body["principal"], token_id if isinstance(token_id, str) else None, str(body.get("via"))
    )


def _message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read(65536))
        return str(body.get("message", "")).splitlines()[0][:300] or error.reason
    except (ValueError, AttributeError, IndexError):
        return str(error.reason)


def login(url: str, token: str, path: Path | None = None) -> tuple[Identity, Path]:
    """Check ``token`` against the server and store it for ``url``; (who it is, the file)."""
    if not token.strip():
        raise UsageError("an empty token")
    token = token.strip()
    identity = whoami(url, token)
    if identity.via == "anonymous":
        raise ConfigError(
            f"{server_url(url)} has access control off: it checks no token, none was stored"
        )
    entries = load(path)
    entries[server_url(url)] = {"token": token, "principal": identity.principal}
    return identity, save(entries, path)


def logout(url: str, path: Path | None = None) -> Path:
    """Forget the token stored for ``url`` (``UsageError`` when there is none)."""
    key = server_url(url)
    entries = load(path)
    if key not in entries:
        raise UsageError(f"no token stored for {key} (in {path or credentials_path()})")
    del entries[key]
    return save(entries, path)
