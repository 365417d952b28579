"""API tokens: 256 random bits, shown once, stored only as their SHA-256, scoped, expiring,
revocable.

A token reads ``fmf_`` followed by 43 base64url characters (32 bytes from ``secrets``). The
ledger records ``TokenIssued`` with the token's SHA-256 and never the token, so whoever reads
the ledger cannot use it. Checking a token is one SHA-256 and one dictionary lookup (about a
microsecond): slow password hashes (argon2id, ~0.45 s here) are for interactive logins only,
never per request; a token has 256 bits of entropy, so a fast hash loses nothing to guessing.

A token's **scope** narrows what its principal may do through it: resource patterns and the
actions allowed on them (see ``fmforge.access.resources``). A request made with the token is
allowed when the principal's grants allow it *and* the scope covers it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fmforge.access.resources import ancestors, compile_patterns
from fmforge.errors import InvalidPolicy, Unauthenticated

PREFIX = "fmf_"
TOKEN_BYTES = 32
_LENGTH = len(PREFIX) + 43  # 32 bytes as unpadded base64url


def new_token() -> str:
    """A fresh token: ``fmf_`` + 256 random bits (``secrets``), base64url."""
    raw = secrets.token_bytes(TOKEN_BYTES)
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_token_id() -> str:
    """A token's public id (what events, logs and revocation name): 64 random bits, hex."""
    return "tok_" + secrets.token_hex(8)


def token_hash(token: str) -> str:
    """The SHA-256 of a token, hex: all that is ever stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Scope:
    """Resource patterns and the actions allowed on them (``*`` for every action)."""

    resource: str
    actions: frozenset[str]

    def to_json(self) -> dict[str, object]:
        return {"resource": self.resource, "actions": sorted(self.actions)}


UNRESTRICTED = (Scope("**", frozenset({"*"})),)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as the ledger tells it (never the token itself)."""

    token_id: str
    principal: str
    sha256: str
    scopes: tuple[Scope, ...]
    expires: float | None  # seconds since the epoch; None: never
    revoked: bool = False
    note: str = ""

    def allows(self, action: str, resource: str) -> bool:
        """Whether the scope covers ``action`` on ``resource`` (one column at most)."""
        chain = ancestors(resource)
        for scope in self.scopes:
            if "*" in scope.actions or action in scope.actions:
                for pattern in compile_patterns(scope.resource):
                    if pattern.matches_chain(chain):
                        return True
        return False


def parse_scopes(scopes: Iterable[Mapping[str, object]]) -> tuple[Scope, ...]:
    """Scopes from their JSON form, checked (patterns parse, actions are known names)."""
    from fmforge.access.policy import ACTIONS

    out = []
    for scope in scopes:
        resource = scope.get("resource")
        actions = scope.get("actions")
        if not isinstance(resource, str) or not isinstance(actions, list) or not actions:
            raise InvalidPolicy(
                f"invalid token scope {dict(scope)!r}: {{resource: PATTERN, actions: [...]}}"
            )
        compile_patterns(resource)
        for action in actions:
            if action != "*" and action not in ACTIONS:
                raise InvalidPolicy(f"invalid token scope: unknown action {action!r}")
        out.append(Scope(resource, frozenset(str(a) for a in actions)))
    return tuple(out)


class TokenIndex:
    """Tokens by their SHA-256: ``authenticate(token)`` in one hash and one lookup."""

    def __init__(self, records: Iterable[TokenRecord]) -> None:
        self.by_hash = {r.sha256: r for r in records}
        self.by_id = {r.token_id: r for r in self.by_hash.values()}

    def authenticate(self, token: str | None, now: float | None = None) -> TokenRecord:
        """The record of a valid token; ``Unauthenticated`` (with a reason code) otherwise."""
        if not token:
            raise Unauthenticated("unauthenticated", "no token given")
        if len(token) != _LENGTH or not token.startswith(PREFIX):
            raise Unauthenticated("malformed", "not an fmforge token (fmf_ and 43 characters)")
        record = self.by_hash.get(hashlib.sha256(token.encode()).hexdigest())
        if record is None:
            raise Unauthenticated("unknown_token", "no such token")
        if record.revoked:
            raise Unauthenticated("revoked", f"token {record.token_id} was revoked")
        if record.expires is not None and (time.time() if now is None else now) >= record.expires:
            raise Unauthenticated("expired", f"token {record.token_id} has expired")
        return record
