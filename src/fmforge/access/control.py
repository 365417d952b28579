"""``AccessControl``: the access domain's one entry point over a repository.

Principals, tokens, grants and the policy change only through it, as events; decisions are
made by an ``Authorizer`` compiled from the state in force. ``authorize`` is the call every
public entry point makes before touching the object store: it decides, **records** the
decision (``AccessGranted`` / ``AccessDenied`` on ``access/log/<resource root>``, durable when
it returns: audit before release) and returns it; ``Decision.require()`` raises
``AccessDenied``. When the ledger cannot be written, the exception propagates and nothing is
released: reads fail closed. Requests with a token go through ``authorize_token``, which
records an unauthenticated, expired or revoked token as a denial too.

Locally, whoever can read ``.fmforge/`` bypasses the library: there the principal is recorded
and mistakes are prevented; the enforcement boundary is the server.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmforge.access import events as ev
from fmforge.access import targets
from fmforge.access.authorizer import NO_CONTEXT, Authorizer, Context, Decision
from fmforge.access.mediation import mediated
from fmforge.access.policy import ACTIONS, ROLES, PolicySpec
from fmforge.access.principals import ANONYMOUS, check_attributes, check_principal
from fmforge.access.resources import compile_patterns, parse_resource
from fmforge.access.shredding import RepositoryKey, SubjectKeys
from fmforge.access.state import AccessState, StateBuilder
from fmforge.access.tokens import (
    UNRESTRICTED,
    Scope,
    TokenIndex,
    TokenRecord,
    new_token,
    new_token_id,
    token_hash,
)
from fmforge.access.views import AccessHistoryView
from fmforge.errors import InvalidPolicy, Unauthenticated

if TYPE_CHECKING:
    from pathlib import Path

    from fmforge.access.audit import Checkpointer
    from fmforge.repository import Repository


_POLICY = targets.fixed("policy")
_AUDIT = targets.fixed("audit")


def _on_pattern(pattern: str) -> list[tuple[str, str]]:
    """``grant`` on the resource a grant names, or ``policy.manage`` for a wildcard one."""
    try:
        return [("grant", parse_resource(pattern).text)]
    except InvalidPolicy:
        return [("policy.manage", "policy")]


def _granted(repo: Repository, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    return _on_pattern(args["resource"])


def _revoked(repo: Repository, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = args["self"].state().grants.get(args["grant_id"])
    return _on_pattern(found.resource) if found else [("policy.manage", "policy")]


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is shown once and never stored."""

    token_id: str
    token: str
    principal: str
    expires: float | None


class AccessControl:
    """Access control over one repository (see the module docstring)."""

    def __init__(self, repo: Repository, *, checkpointer: Checkpointer | None = None) -> None:
        self.repo = repo
        self.checkpointer = checkpointer
        self._authorizer: Authorizer | None = None
        self._tokens: TokenIndex | None = None
        self._facts: dict[str, tuple[Mapping[str, Any] | None, tuple[str, ...] | None]] = {}
        self._subject_keys: SubjectKeys | None = None
        self._builder = StateBuilder()
        self._lock = threading.RLock()

    # ---- the state in force -------------------------------------------------------------

    def state(self) -> AccessState:
        """The access-control state in force (what ``repo.view(AccessView)`` reads too)."""
        return self.authorizer().state

    def authorizer(self) -> Authorizer:
        """The compiled state, recompiled only when access-control changes were recorded
        since (folded in from the history view, not re-read whole)."""
        with self._lock:  # a server's threads share it
            changes = self.repo.view(AccessHistoryView).changes(self._builder.seq)
            current = self._authorizer
            if current is None or changes:
                for seq, kind, data in changes:
                    self._builder.apply(seq, kind, data)
                state = self._builder.state()
                current = self._authorizer = Authorizer(state)
                self._tokens = TokenIndex(state.tokens.values())
                for resource, (attributes, sources) in self._facts.items():
                    current.set_facts(resource, attributes, sources)
            return current

    def set_facts(
        self,
        resource: str,
        attributes: Mapping[str, Any] | None = None,
        sources: Iterable[str] | None = None,
    ) -> None:
        """What the ledger says of a resource beyond the policy, and its lineage (see
        ``Authorizer.set_facts``); kept across recompilations."""
        kept = tuple(sources) if sources is not None else None
        self._facts[parse_resource(resource).text] = (attributes, kept)
        if self._authorizer is not None:
            self._authorizer.set_facts(resource, attributes, kept)

    def state_at(self, seq: int) -> AccessState:
        """The state in force just after event ``seq`` (its changes replayed)."""
        return self.repo.view(AccessHistoryView).state_at(seq)

    @mediated("audit.read", _AUDIT, repo="self")
    def could(
        self, action: str, resource: str, *, at_seq: int | None = None, purpose: str | None = None
    ) -> list[Decision]:
        """Every principal's decision on ``action`` on ``resource``, now or as the state
        stood after event ``at_seq``: "who could read X at T"."""
        if action not in ACTIONS:
            raise InvalidPolicy(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        if at_seq is None:
            authorizer = self.authorizer()
        else:
            authorizer = Authorizer(self.state_at(at_seq))
            for text, (attributes, sources) in self._facts.items():
                authorizer.set_facts(text, attributes, sources)
        return authorizer.could(action, resource, Context(purpose))

    # ---- changes (each an event; a checkpoint follows when a checkpointer is set) ------

    def _changed(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.after_policy_change()

    @mediated("policy.manage", _POLICY, repo="self")
    def add_principal(self, principal: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Create a principal with no access."""
        check_principal(principal)
        attrs = check_attributes(attributes or {})
        version = self.repo.ledger.stream_version(ev.PRINCIPALS)
        if principal in self.state().principals:
            raise InvalidPolicy(f"principal {principal} exists already")
        self.repo.record(
            ev.PRINCIPALS,
            ev.PrincipalCreated({"principal": principal, "attributes": attrs}),
            expected_version=version,
        )
        self._changed()

    @mediated("policy.manage", _POLICY, repo="self")
    def update_principal(
        self,
        principal: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        disabled: bool | None = None,
    ) -> None:
        """Replace a principal's attributes (those given), or disable / enable it."""
        found = self._principal(principal)
        attrs = check_attributes(attributes) if attributes is not None else dict(found.attributes)
        self.repo.record(
            ev.PRINCIPALS,
            ev.PrincipalUpdated({
                "principal": principal, "attributes": attrs,
                "disabled": found.disabled if disabled is None else disabled,
            }),
        )  # fmt: skip
        self._changed()

    @mediated("policy.manage", _POLICY, repo="self")
    def add_member(self, group: str, member: str) -> None:
        check_principal(group, ("group",))
        self._principal(group)
        self._principal(member)
        self.repo.record(ev.PRINCIPALS, ev.GroupMemberAdded({"group": group, "member": member}))
        self._changed()

    @mediated("policy.manage", _POLICY, repo="self")
    def remove_member(self, group: str, member: str) -> None:
        if group not in self._principal(member).groups:
            raise InvalidPolicy(f"{member} is not a member of {group}")
        self.repo.record(ev.PRINCIPALS, ev.GroupMemberRemoved({"group": group, "member": member}))
        self._changed()

    def _principal(self, principal: str) -> Any:
        check_principal(principal)
        found = self.state().principals.get(principal)
        if found is None:
            raise InvalidPolicy(f"no principal {principal} (add it first)")
        return found

    @mediated("policy.manage", _POLICY, repo="self")
    def issue_token(
        self,
        principal: str,
        *,
        scopes: Sequence[Scope] = UNRESTRICTED,
        expires_in: float | None = None,
        note: str = "",
    ) -> IssuedToken:
        """A new token for ``principal``: returned once, recorded only as its SHA-256."""
        found = self._principal(principal)
        if found.kind == "group":
            raise InvalidPolicy(f"{principal} is a group; tokens are for users and services")
        if expires_in is not None and expires_in <= 0:
            raise InvalidPolicy(f"a token's lifetime must be positive, not {expires_in}")
        for scope in scopes:
            compile_patterns(scope.resource)
            unknown = sorted(a for a in scope.actions if a != "*" and a not in ACTIONS)
            if unknown:
                raise InvalidPolicy(f"token scope: unknown action {unknown[0]!r}")
        token, token_id = new_token(), new_token_id()
        expires = None if expires_in is None else time.time() + expires_in
        self.repo.record(
            ev.TOKENS,
            ev.TokenIssued({
                "token_id": token_id, "principal": principal, "sha256": token_hash(token),
                "scopes": [s.to_json() for s in scopes],  # type: ignore[misc]
                "expires": expires, "note": note,
            }),
        )  # fmt: skip
        self._changed()
        return IssuedToken(token_id, token, principal, expires)

    @mediated("policy.manage", _POLICY, repo="self")
    def revoke_token(self, token_id: str, reason: str = "") -> None:
        token = self.state().tokens.get(token_id)
        if token is None:
            raise InvalidPolicy(f"no token {token_id}")
        if token.revoked:
            raise InvalidPolicy(f"token {token_id} is revoked already")
        self.repo.record(ev.TOKENS, ev.TokenRevoked({"token_id": token_id, "reason": reason}))
        self._changed()

    @mediated("grant", _granted, repo="self")
    def grant(
        self,
        principal: str,
        resource: str,
        *,
        role: str | None = None,
        actions: Iterable[str] = (),
    ) -> str:
        """Grant a role's actions, or the actions named, on a resource pattern (and its
        children); returns the grant id."""
        self._principal(principal)
        compile_patterns(resource)
        state = self.state()
        named = sorted(set(actions))
        unknown = [a for a in named if a not in ACTIONS]
        if unknown:
            raise InvalidPolicy(f"unknown action {unknown[0]!r} (one of {', '.join(ACTIONS)})")
        granted = list(state.policy.role_actions(role)) if role else []
        if not granted and not named:
            raise InvalidPolicy("a grant names a role or at least one action")
        grant_id = "grant_" + secrets.token_hex(8)
        self.repo.record(
            ev.GRANTS,
            ev.GrantAdded({
                "grant_id": grant_id, "principal": principal, "resource": resource,
                "actions": sorted({*granted, *named}), "role": role,
            }),
        )  # fmt: skip
        self._changed()
        return grant_id

    @mediated("grant", _revoked, repo="self")
    def revoke_grant(self, grant_id: str, reason: str = "") -> None:
        if grant_id not in self.state().grants:
            raise InvalidPolicy(f"no grant {grant_id}")
        self.repo.record(ev.GRANTS, ev.GrantRevoked({"grant_id": grant_id, "reason": reason}))
        self._changed()

    @mediated("policy.manage", _POLICY, repo="self")
    def set_policy(self, policy: PolicySpec, source: str = "") -> str:
        """Put ``policy`` in force; returns its digest (nothing recorded when unchanged)."""
        digest = policy.digest()
        if digest == self.state().policy_digest:
            return digest
        if policy.enabled and not self.admins():
            self.bootstrap()  # whoever turns access control on is not locked out by it
        self.repo.record(
            ev.POLICY,
            ev.PolicySet({"policy": policy.to_json(), "digest": digest, "source": source}),
        )
        self._changed()
        return digest

    def admins(self) -> list[str]:
        """Principals holding a grant of ``policy.manage`` on everything."""
        return sorted(
            g.principal
            for g in self.state().grants.values()
            if "policy.manage" in g.actions and g.resource == "**"
        )

    def bootstrap(self, admin: str | None = None, *, token: bool = False) -> IssuedToken | None:
        """The first admin: ``admin`` (default: the configured user, ``user:<user.name>``)
        created if need be and granted ``admin`` on ``**``, with a token when asked (shown
        once). Only while no one is admin: afterwards admins grant."""
        if self.admins():
            raise InvalidPolicy(
                f"access control has admins already ({', '.join(self.admins())}): they grant"
            )
        user = str(self.repo.user)
        name = admin or (user if user.split(":", 1)[0] in ("user", "service") else f"user:{user}")
        check_principal(name, ("user", "service"))
        if name not in self.state().principals:
            self.repo.record(
                ev.PRINCIPALS, ev.PrincipalCreated({"principal": name, "attributes": {}})
            )
        grant_id = "grant_" + secrets.token_hex(8)
        self.repo.record(
            ev.GRANTS,
            ev.GrantAdded({
                "grant_id": grant_id, "principal": name, "resource": "**",
                "actions": sorted(ROLES["admin"]), "role": "admin",
            }),
        )  # fmt: skip
        issued = None
        if token:
            value, token_id = new_token(), new_token_id()
            self.repo.record(
                ev.TOKENS,
                ev.TokenIssued({
                    "token_id": token_id, "principal": name, "sha256": token_hash(value),
                    "scopes": [s.to_json() for s in UNRESTRICTED],  # type: ignore[misc]
                    "expires": None, "note": "the first admin's",
                }),
            )  # fmt: skip
            issued = IssuedToken(token_id, value, name, None)
        self._changed()
        return issued

    # ---- authentication and decisions ---------------------------------------------------

    def authenticate(self, token: str | None, now: float | None = None) -> TokenRecord:
        self.authorizer()
        assert self._tokens is not None
        return self._tokens.authenticate(token, now)

    def token_record(self, token: str) -> TokenRecord | None:
        """The record of ``token`` whatever its state (expired, revoked), if it was issued."""
        self.authorizer()
        assert self._tokens is not None
        return self._tokens.by_hash.get(token_hash(token))

    def decide(
        self,
        principal: str,
        action: str,
        resource: str,
        context: Context = NO_CONTEXT,
        *,
        token: TokenRecord | None = None,
    ) -> Decision:
        """The decision, without recording it (for ``fmforge access check``)."""
        if action not in ACTIONS:
            raise InvalidPolicy(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        return self.authorizer().decide(principal, action, resource, context, token=token)

    def authorize(
        self,
        principal: str,
        action: str,
        resource: str,
        context: Context = NO_CONTEXT,
        *,
        token: TokenRecord | None = None,
        request_id: str | None = None,
        via: str = "library",
        objects: Sequence[str] = (),
    ) -> Decision:
        """Decide and record the decision before anything is released; returns it."""
        decision = self.decide(principal, action, resource, context, token=token)
        self.record_decision(decision, context, token, request_id, via, objects)
        return decision

    def authorize_token(
        self,
        token: str | None,
        action: str,
        resource: str,
        context: Context = NO_CONTEXT,
        *,
        request_id: str | None = None,
        via: str = "http",
    ) -> Decision:
        """``authorize`` for a request carrying ``token``: a missing, malformed, unknown,
        expired or revoked token is recorded as a denial (principal ``anonymous`` unless the
        token names one) and raised as ``Unauthenticated``."""
        try:
            record = self.authenticate(token)
        except Unauthenticated as exc:
            known = None
            if token and self._tokens is not None:
                known = self._tokens.by_hash.get(token_hash(token))
            who = known.principal if known else ANONYMOUS
            denial = Decision(False, who, action, parse_resource(resource).text, exc.reason)
            self.record_decision(denial, context, known, request_id, via, ())
            raise
        return self.authorize(
            record.principal, action, resource, context, token=record,
            request_id=request_id, via=via,
        )  # fmt: skip

    def record_decision(
        self,
        decision: Decision,
        context: Context,
        token: TokenRecord | None,
        request_id: str | None,
        via: str,
        objects: Sequence[str],
        *,
        also: Sequence[str] = (),
    ) -> None:
        data: dict[str, Any] = {
            "principal": decision.principal, "action": decision.action,
            "resource": decision.resource, "reason": decision.reason, "rule": decision.rule,
            "purpose": context.purpose, "token_id": token.token_id if token else None,
            "request_id": request_id, "masked": list(decision.masked), "via": via,
        }  # fmt: skip
        if objects:
            data["objects"] = list(objects)
        if also:
            data["also"] = list(also)
        kind = ev.AccessGranted if decision.allowed else ev.AccessDenied
        root = parse_resource(decision.resource).root
        self.repo.record(ev.log_stream(root), kind(data))  # type: ignore[arg-type]

    # ---- data subjects --------------------------------------------------------------------

    def subject_keys(self) -> SubjectKeys:
        if self._subject_keys is None:
            self._subject_keys = SubjectKeys(
                self.repo.path / "keys" / "subjects.db", RepositoryKey.open(self.key_file())
            )
        return self._subject_keys

    def key_file(self) -> Path:
        from pathlib import Path

        configured = str(self.repo.settings["access.key_file"])
        return Path(configured) if configured else self.repo.path / "keys" / "repository.key"

    def subject_key(self, subject: str) -> str:
        """The key id of ``subject``'s key, created (and recorded) on first use."""
        keys = self.subject_keys()
        key_id, created = keys.create(subject)
        if created:
            pseudonym = keys.master.pseudonym(subject)
            self.repo.record(
                ev.SUBJECTS, ev.SubjectKeyCreated({"key_id": key_id, "pseudonym": pseudonym})
            )
        return key_id

    def forget_subject(self, subject: str, reason: str, *, flagged: Sequence[str] = ()) -> str:
        """Record ``SubjectForgotten`` (with the pseudonym, never the id, and the resources
        derived from the subject's data, ``flagged`` as needing unlearning), then destroy the
        subject's key: everything encrypted under it is unreadable from then on. Running it
        again after a crash finishes the destruction."""
        keys = self.subject_keys()
        key_id = keys.key_id(subject)
        pseudonym = keys.master.pseudonym(subject)
        data: dict[str, Any] = {"key_id": key_id, "pseudonym": pseudonym, "reason": reason}
        if flagged:
            data["flagged"] = list(flagged)
        self.repo.record(ev.SUBJECTS, ev.SubjectForgotten(data))  # type: ignore[arg-type]
        keys.destroy(key_id)
        return key_id

    def close(self) -> None:
        if self._subject_keys is not None:
            self._subject_keys.close()
            self._subject_keys = None
