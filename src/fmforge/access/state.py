"""The access-control state as the ledger tells it: principals, groups, grants, tokens and the
policy, folded from the ``access/`` events.

``AccessView`` (``fmforge.access.views``) keeps it as a projection for the present;
``AccessHistoryView`` keeps the events themselves, and ``replay`` folds any prefix of them, so
the state in force at a past seq (or time) is rebuilt: "who could read X at T".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fmforge.access.policy import PolicySpec, policy_from_json
from fmforge.access.principals import Principal
from fmforge.access.tokens import Scope, TokenRecord

STATE_TYPES = (
    "PrincipalCreated",
    "PrincipalUpdated",
    "GroupMemberAdded",
    "GroupMemberRemoved",
    "TokenIssued",
    "TokenRevoked",
    "PasswordSet",
    "GrantAdded",
    "GrantRevoked",
    "PolicySet",
)
"""The event types the state is folded from."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Actions on the resources a pattern matches (and their children), for a principal."""

    grant_id: str
    principal: str
    resource: str  # a resource pattern
    actions: frozenset[str]
    role: str | None = None


@dataclass(frozen=True)
class AccessState:
    """Everything the authorizer compiles, as of ``seq``."""

    principals: Mapping[str, Principal] = field(default_factory=dict)
    grants: Mapping[str, Grant] = field(default_factory=dict)
    tokens: Mapping[str, TokenRecord] = field(default_factory=dict)  # by token id
    policy: PolicySpec = field(default_factory=PolicySpec)
    policy_digest: str = ""
    seq: int = 0
    passwords: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """principal -> (argon2id hash, seq of the event that set it)"""


def scopes_of(data: Iterable[Mapping[str, Any]]) -> tuple[Scope, ...]:
    return tuple(Scope(s["resource"], frozenset(s["actions"])) for s in data)


class StateBuilder:
    """Folds access events, in seq order, into an ``AccessState``."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}
        self.members: dict[str, set[str]] = {}  # member -> groups
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.passwords: dict[str, tuple[str, int]] = {}
        self.policy = PolicySpec()
        self.digest = ""
        self.seq = 0

    def apply(self, seq: int, kind: str, d: Mapping[str, Any]) -> None:
        """Fold one event (its seq, type and payload)."""
        if kind == "PrincipalCreated":
            self.principals[d["principal"]] = Principal(d["principal"], dict(d["attributes"]))
        elif kind == "PrincipalUpdated":
            old = self.principals.get(d["principal"], Principal(d["principal"]))
            self.principals[d["principal"]] = replace(
                old, attributes=dict(d["attributes"]), disabled=d["disabled"]
            )
        elif kind == "GroupMemberAdded":
            self.members.setdefault(d["member"], set()).add(d["group"])
        elif kind == "GroupMemberRemoved":
            self.members.get(d["member"], set()).discard(d["group"])
        elif kind == "TokenIssued":
            self.tokens[d["token_id"]] = TokenRecord(
                d["token_id"], d["principal"], d["sha256"], scopes_of(d["scopes"]),
                d["expires"], False, d["note"],
            )  # fmt: skip
        elif kind == "TokenRevoked":
            token = self.tokens.get(d["token_id"])
            if token is not None:
                self.tokens[d["token_id"]] = replace(token, revoked=True)
        elif kind == "PasswordSet":
            self.passwords[d["principal"]] = (d["hash"], seq)
        elif kind == "GrantAdded":
            self.grants[d["grant_id"]] = Grant(
                d["grant_id"], d["principal"], d["resource"], frozenset(d["actions"]), d["role"]
            )
        elif kind == "GrantRevoked":
            self.grants.pop(d["grant_id"], None)
        elif kind == "PolicySet":
            self.policy = policy_from_json(d["policy"], f"PolicySet at seq {seq}")
            self.digest = d["digest"]
        self.seq = max(self.seq, seq)

    def state(self) -> AccessState:
        principals = {
            name: replace(p, groups=frozenset(self.members.get(name, ())))
            for name, p in self.principals.items()
        }
        return AccessState(
            principals, dict(self.grants), dict(self.tokens), self.policy, self.digest, self.seq,
            dict(self.passwords),
        )  # fmt: skip


def replay(events: Iterable[tuple[int, str, Mapping[str, Any]]]) -> AccessState:
    """The state after ``events``: (seq, type, payload) of a ledger prefix's access events,
    in seq order (``AccessHistory`` keeps them)."""
    builder = StateBuilder()
    for seq, kind, data in events:
        if kind in STATE_TYPES:
            builder.apply(seq, kind, data)
    return builder.state()
