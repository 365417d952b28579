"""Dashboard sessions: a signed cookie after a password login, a CSRF token beside it, and
the failed-login limit.

- **The cookie** (``fmforge_session``: HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS)
  is ``base64url(principal|session id|expiry|password seq).base64url(HMAC-SHA256)`` under the
  server secret. Checking it is one HMAC, no argon2 and no lookup; it ends at its expiry, at
  ``POST /logout`` (its recorded event names the session: ``Gate.logged_out`` reads them
  from the ledger, so a logout holds across restarts and server processes), when the
  password changes (the seq of the ``PasswordSet`` it was opened under is in it) and when the
  principal is disabled.
- **The secret** is 32 random bytes in ``.fmforge/keys/session.key``, created with mode 0600
  on first use and refused when others may read it. Deleting it ends every session.
- **CSRF.** A request authenticated by the cookie that changes anything (POST, PUT, PATCH,
  DELETE) must carry ``X-CSRF-Token``: the HMAC of the session id under the secret, which
  ``POST /login`` answers and the readable cookie ``fmforge_csrf`` holds (the page's script
  copies it into the header; a foreign site can neither read it nor set the header).
  Requests with a token (Bearer, Basic) carry no ambient credential and need none.
- **Failed logins** are limited per principal and client address: ``FAILURES`` within
  ``WINDOW_S`` seconds, then 429 with ``Retry-After`` until the oldest leaves the window,
  without checking the password. The counts are each server process's own, in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from fmforge.errors import ConfigError

COOKIE, CSRF_COOKIE, CSRF_HEADER = "fmforge_session", "fmforge_csrf", "x-csrf-token"
LIFETIME_S = 12 * 3600
FAILURES, WINDOW_S = 5, 60.0
SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid cookie says."""

    principal: str
    session_id: str
    expires: float
    password_seq: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(path: Path) -> bytes:
    """The server secret at ``path``, created (mode 0600) when missing; ``ConfigError`` when
    group or others may read it, or it is not 32 bytes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SECRET_BYTES))
            out.flush()
            os.fsync(out.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} may be read by others (mode {mode:o}): chmod 600 it")
    raw = path.read_bytes()
    if len(raw) != SECRET_BYTES:
        raise ConfigError(f"{path} is not a session secret ({SECRET_BYTES} bytes): delete it")
    return raw


class Sessions:
    """Issues and checks session cookies and CSRF tokens under one secret."""

    def __init__(self, secret: bytes, lifetime_s: float = LIFETIME_S) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _mac(self, what: bytes) -> bytes:
        return hmac.new(self._secret, what, hashlib.sha256).digest()

    def issue(self, principal: str, password_seq: int, now: float | None = None) -> Session:
        expires = (time.time() if now is None else now) + self.lifetime_s
        return Session(principal, secrets.token_hex(8), expires, password_seq)

    def cookie(self, session: Session) -> str:
        payload = f"{session.principal}|{session.session_id}|{session.expires:.0f}|"
        payload += str(session.password_seq)
        raw = payload.encode()
        return f"{_b64(raw)}.{_b64(self._mac(b'session:' + raw))}"

    def csrf(self, session_id: str) -> str:
        return _b64(self._mac(b"csrf:" + session_id.encode()))

    def check(self, cookie: str, now: float | None = None) -> Session | None:
        """The session a cookie names, if its signature holds and it has not ended."""
        payload, dot, mac = cookie.strip().partition(".")
        if not dot or len(cookie) > 1024:
            return None
        try:
            raw, given = _unb64(payload), _unb64(mac)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._mac(b"session:" + raw)):
            return None
        try:
            principal, session_id, expires, seq = raw.decode().split("|")
            session = Session(principal, session_id, float(expires), int(seq))
        except ValueError:
            return None
        moment = time.time() if now is None else now
        if moment >= session.expires:
            return None
        return session

    def csrf_ok(self, session: Session, header: str | None) -> bool:
        if header is None:
            return False
        expected = self.csrf(session.session_id).encode()
        return hmac.compare_digest(header.encode("utf-8", "replace"), expected)


class FailedLogins:
    """Failed logins per (principal, client address) in a sliding window."""

    def __init__(self, failures: int = FAILURES, window_s: float = WINDOW_S) -> None:
        self.failures = failures
        self.window_s = window_s
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        return seen

    def retry_after(self, principal: str, address: str, now: float | None = None) -> int:
        """Seconds until another attempt is allowed (0: now)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            seen = self._recent((principal, address), moment)
            if len(seen) < self.failures:
                return 0
            return max(1, int(seen[0] + self.window_s - moment + 0.999))

    def failed(self, principal: str, address: str, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        with self._lock:
            if len(self._seen) > 100_000:  # a flood of names: forget the idle ones
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > moment - 60}
            self._recent((principal, address), moment).append(moment)

    def succeeded(self, principal: str, address: str) -> None:
        with self._lock:
            self._seen.pop((principal, address), None)


def secret_path(fmforge_dir: Path) -> Path:
    keys = fmforge_dir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    return keys / "session.key"
