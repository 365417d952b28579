"""Decisions: an ``AccessState`` compiled into dictionaries, asked ``decide(principal, action,
resource, context)``.

Cedar's semantics: default deny; allowed when a grant or ``permit`` rule matches and no
``forbid`` does (user rules and the compliance rules of ``fmforge.access.compliance``). A grant
or rule on a resource covers its children (``fmforge.access.resources``).

Compiled: grants become ``(subject, action) -> {resource: grant id}`` for exact patterns and a
short list of compiled patterns for wildcards, so an uncached decision is a few dictionary
lookups per ancestor of the resource; decisions are cached per
``(principal, action, resource, context)`` until the state or the facts change (or a
retention date passes). One decision per request and resource: never per row or chunk.

A request naming columns (``dataset/yt@3#author,text``) is decided column by column: a column
tagged ``pii`` that the principal may not read in clear comes back in ``masked`` (policy
``pii: mask``) or denies the request (``pii: deny``); a read of a whole version masks its pii
columns the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fmforge.access import compliance
from fmforge.access.policy import Condition, PolicySpec, Rule
from fmforge.access.resources import Pattern, ancestors, compile_patterns, parse_resource
from fmforge.access.state import AccessState
from fmforge.access.tokens import TokenRecord
from fmforge.errors import AccessDenied

_MISSING = object()
MAX_CACHE = 200_000


@dataclass(frozen=True, slots=True)
class Context:
    """What the request says about itself: its ``purpose`` and other attributes (strings)
    that conditions read as ``context.NAME``."""

    purpose: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> Any:
        if name == "purpose":
            return self.purpose if self.purpose is not None else _MISSING
        return next((v for k, v in self.attributes if k == name), _MISSING)


NO_CONTEXT = Context()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request and resource, with the reason that goes into the record:
    ``grant:ID`` / ``permit:RULE`` when allowed, else ``no_grant``, ``forbid:RULE``,
    ``forbid:pii``, ``forbid:licence``, ``retention``, ``token_scope``, ``disabled``..."""

    allowed: bool
    principal: str
    action: str
    resource: str
    reason: str
    rule: str | None = None
    masked: tuple[str, ...] = ()
    detail: str = ""

    def require(self) -> Decision:
        """This decision, or ``AccessDenied`` when it refuses."""
        if not self.allowed:
            raise AccessDenied(self.principal, self.action, self.resource, self.reason, self.detail)
        return self


class _CompiledRule:
    __slots__ = ("conditions", "id", "patterns", "principals", "unless")

    def __init__(self, rule: Rule) -> None:
        self.id = rule.id
        self.principals = None if "*" in rule.principals else frozenset(rule.principals)
        self.patterns = [p for text in rule.resources for p in compile_patterns(text)]
        self.conditions = rule.when
        self.unless = rule.unless


class Authorizer:
    """A compiled ``AccessState``; rebuild one (cheap) when the state changes."""

    def __init__(self, state: AccessState) -> None:
        self.state = state
        self.policy: PolicySpec = state.policy
        self.subjects: dict[str, tuple[str, ...]] = {}
        for name, principal in state.principals.items():
            if not principal.disabled:
                self.subjects[name] = (name, *sorted(principal.groups))
        self.exact: dict[tuple[str, str], dict[str, str]] = {}
        self.wild: dict[tuple[str, str], list[tuple[Pattern, str]]] = {}
        for grant in state.grants.values():
            for pattern in compile_patterns(grant.resource):
                for action in grant.actions:
                    key = (grant.principal, action)
                    if pattern.exact:
                        self.exact.setdefault(key, {}).setdefault(pattern.text, grant.grant_id)
                    else:
                        self.wild.setdefault(key, []).append((pattern, grant.grant_id))
        self.permits: dict[str, list[_CompiledRule]] = {}
        self.forbids: dict[str, list[_CompiledRule]] = {}
        for rule in self.policy.rules:
            target = self.permits if rule.effect == "permit" else self.forbids
            for action in rule.actions:
                target.setdefault(action, []).append(_CompiledRule(rule))
        self.attribute_patterns = [
            (pattern, attrs.values())
            for text, attrs in self.policy.resources.items()
            for pattern in compile_patterns(text)
        ]
        self.facts: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, tuple[str, ...]] = {}
        self._cache: dict[tuple[Any, ...], tuple[Decision, float]] = {}
        self._attrs: dict[str, dict[str, Any]] = {}

    # ---- facts from elsewhere in the ledger --------------------------------------------

    def set_facts(
        self,
        resource: str,
        attributes: Mapping[str, Any] | None = None,
        sources: Iterable[str] | None = None,
    ) -> None:
        """What the ledger says about ``resource`` beyond the policy (a dataset's column tags
        and licence, a branch's protection, ``needs_unlearning``) and what it was made from
        (lineage: a model commit's run, a run's dataset versions). Overrides the policy's
        attributes; clears the decision cache."""
        text = parse_resource(resource).text
        if attributes is not None:
            self.facts[text] = dict(attributes)
        if sources is not None:
            self.sources[text] = tuple(parse_resource(s).text for s in sources)
        self._cache.clear()
        self._attrs.clear()

    def attributes(self, resource: str) -> dict[str, Any]:
        """The attributes of ``resource``: those of its ancestors, root first, each overridden
        by nearer ones; the policy's, then the facts given."""
        found = self._attrs.get(resource)
        if found is not None:
            return found
        chain = ancestors(resource)
        merged: dict[str, Any] = {}
        for node in reversed(chain):
            for pattern, values in self.attribute_patterns:
                if pattern.matches_node(node):
                    merged.update(values)
            merged.update(self.facts.get(node, ()))
        if len(self._attrs) > MAX_CACHE:
            self._attrs.clear()
        self._attrs[resource] = merged
        return merged

    def lineage(self, resource: str) -> list[str]:
        """What ``resource`` (or any of its ancestors) was made from, transitively."""
        if not self.sources:
            return []

        def sources_of(item: str) -> list[str]:
            return [s for node in ancestors(item) for s in self.sources.get(node, ())]

        return compliance.lineage_closure(resource, sources_of)

    # ---- deciding -----------------------------------------------------------------------

    def decide(
        self,
        principal: str,
        action: str,
        resource: str,
        context: Context = NO_CONTEXT,
        *,
        token: TokenRecord | None = None,
        now: float | None = None,
    ) -> Decision:
        """The decision for ``principal`` doing ``action`` on ``resource`` (columns included),
        through ``token`` if given (its scope must cover the request too); ``now`` decides as
        of another moment (retention), uncached."""
        if now is not None:  # a decision at another moment: never cached
            return self._decide(principal, action, resource, context, token, now)[0]
        moment = time.time()
        key = (principal, action, resource, context, token.token_id if token else None)
        hit = self._cache.get(key)
        if hit is not None and moment < hit[1]:
            return hit[0]
        decision, valid_until = self._decide(principal, action, resource, context, token, moment)
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[key] = (decision, valid_until)
        return decision

    def _decide(
        self,
        principal: str,
        action: str,
        resource: str,
        context: Context,
        token: TokenRecord | None,
        now: float,
    ) -> tuple[Decision, float]:
        parsed = parse_resource(resource)
        subjects = self.subjects.get(principal)
        if subjects is None:
            known = principal in self.state.principals
            reason = "disabled" if known else "no_grant"
            detail = "the principal is disabled" if known else "unknown principal"
            return Decision(
                False, principal, action, parsed.text, reason, None, (), detail
            ), math.inf
        targets = [parsed.column(c) for c in parsed.columns] or [parsed.base]
        if token is not None:
            for target in targets:
                if not token.allows(action, target):
                    detail = f"token {token.token_id} is not scoped for {action} on {target}"
                    return Decision(
                        False, principal, action, parsed.text, "token_scope", token.token_id,
                        (), detail,
                    ), math.inf  # fmt: skip
        masked: list[str] = []
        why = ""
        first: Decision | None = None
        valid = math.inf
        for target in targets:
            decision, until = self._one(principal, subjects, action, target, context, now)
            valid = min(valid, until)
            if decision.reason == "forbid:pii" and self._pii_mode(target) == "mask":
                masked.append(decision.masked[0])
                why = why or f"masked: {decision.detail}"
                continue
            if not decision.allowed:
                return _with(decision, parsed.text), valid
            first = first or decision
        if first is None:  # every column asked for is masked
            first = self._one(principal, subjects, action, parsed.base, context, now)[0]
            if not first.allowed:
                return _with(first, parsed.text), valid
        if not parsed.columns and action in ("read", "export") and "@" in parsed.base:
            for column in self.attributes(parsed.base).get("pii_columns") or ():
                decision, _ = self._one(
                    principal, subjects, action, parsed.column(column), context, now
                )
                if decision.reason == "forbid:pii":
                    if self._pii_mode(parsed.base) == "deny":
                        return _with(decision, parsed.text), valid
                    masked.append(column)
                    why = why or f"masked: {decision.detail}"
        return Decision(
            True, principal, action, parsed.text, first.reason, first.rule, tuple(masked),
            first.detail or why,
        ), valid  # fmt: skip

    def _pii_mode(self, resource: str) -> str:
        mode = self.attributes(resource).get("pii_mode") or self.policy.compliance.pii
        return str(mode)

    def _permitted(
        self,
        subjects: tuple[str, ...],
        action: str,
        chain: tuple[str, ...],
        principal: str,
        resource: str,
        context: Context,
    ) -> tuple[str, str] | None:
        """(reason, id) of the first grant or permit rule covering the request, or None."""
        exact, wild = self.exact, self.wild
        for subject in subjects:
            found = exact.get((subject, action))
            if found:
                for node in chain:
                    grant = found.get(node)
                    if grant is not None:
                        return f"grant:{grant}", grant
            patterns = wild.get((subject, action))
            if patterns:
                for pattern, grant in patterns:
                    if pattern.matches_chain(chain):
                        return f"grant:{grant}", grant
        for rule in (*self.permits.get(action, ()), *self.permits.get("*", ())):
            if self._applies(rule, subjects, chain, principal, resource, context):
                return f"permit:{rule.id}", rule.id
        return None

    def _one(
        self,
        principal: str,
        subjects: tuple[str, ...],
        action: str,
        resource: str,
        context: Context,
        now: float,
    ) -> tuple[Decision, float]:
        """One resource (one column at most): permits, then every forbid."""
        chain = ancestors(resource)
        permit = self._permitted(subjects, action, chain, principal, resource, context)
        if permit is None:
            detail = f"no grant gives {action} on {resource}"
            return Decision(
                False, principal, action, resource, "no_grant", None, (), detail
            ), math.inf
        for rule in (*self.forbids.get(action, ()), *self.forbids.get("*", ())):
            if self._applies(rule, subjects, chain, principal, resource, context):
                reason, detail = f"forbid:{rule.id}", f"rule {rule.id} forbids it"
                return Decision(
                    False, principal, action, resource, reason, rule.id, (), detail
                ), math.inf
        return self._compliance(principal, subjects, action, resource, chain, context, permit, now)

    def _compliance(
        self,
        principal: str,
        subjects: tuple[str, ...],
        action: str,
        resource: str,
        chain: tuple[str, ...],
        context: Context,
        permit: tuple[str, str],
        now: float,
    ) -> tuple[Decision, float]:
        rules = self.policy.compliance
        attrs = self.attributes(resource)

        def deny(reason: str, rule: str, detail: str, masked: tuple[str, ...] = ()) -> Decision:
            return Decision(False, principal, action, resource, reason, rule, masked, detail)

        valid = math.inf
        until = attrs.get("retention_until")
        if rules.retention and action in compliance.READS and isinstance(until, int | float):
            if now >= until:
                return deny("retention", "retention", f"retention of {resource} ended"), math.inf
            valid = float(until)
        lineage: list[str] | None = None
        if action in compliance.LICENSED and rules.licence:
            lineage = self.lineage(resource)
            found = compliance.licence_violation(
                context.purpose, [resource, *lineage], self.attributes, self.policy.licences
            )
            if found is not None:
                source, licence = found
                via = "" if source == resource else f" (made from {source})"
                detail = (
                    f"{source} is licensed {licence}, which excludes {context.purpose} use{via}"
                )
                return deny("forbid:licence", "licence", detail), valid
        if action == "use" and rules.unlearning == "deny":
            lineage = self.lineage(resource) if lineage is None else lineage
            source = compliance.flagged([resource, *lineage], self.attributes)
            if source:
                detail = f"{source} is derived from forgotten data"
                return deny("forbid:unlearning", "unlearning", detail), valid
        protected = rules.protected_branches and attrs.get("protected") is True
        if action == "commit" and protected:
            bypass = self._permitted(
                subjects, "bypass_protection", chain, principal, resource, context
            )
            if bypass is None:
                detail = f"{resource} is protected; committing needs bypass_protection"
                return deny("forbid:protected", "protected", detail), valid
        columns = parse_resource(resource).columns
        if columns and action in ("read", "export") and rules.pii != "off":
            column = columns[0]
            may = self._permitted(subjects, "read_pii", chain, principal, resource, context)
            principal_attrs = self.state.principals[principal].attributes
            why = compliance.pii_blocked(
                column, attrs, principal_attrs, context.purpose, may is not None
            )
            if why:
                return deny("forbid:pii", "pii", why, (column,)), valid
        reason, rule = permit
        return Decision(True, principal, action, resource, reason, rule), valid

    # ---- conditions ----------------------------------------------------------------------

    def _applies(
        self,
        rule: _CompiledRule,
        subjects: tuple[str, ...],
        chain: tuple[str, ...],
        principal: str,
        resource: str,
        context: Context,
    ) -> bool:
        if rule.principals is not None and rule.principals.isdisjoint(subjects):
            return False
        if not any(p.matches_chain(chain) for p in rule.patterns):
            return False
        if not rule.conditions and not rule.unless:
            return True

        def read(ref: str) -> Any:
            return self._attribute(ref, principal, resource, context)

        if not all(_holds(c, read) for c in rule.conditions):
            return False
        return not any(_holds(c, read) for c in rule.unless)

    def _attribute(self, ref: str, principal: str, resource: str, context: Context) -> Any:
        scope, name = ref.split(".", 1)
        if scope == "context":
            return context.get(name)
        if scope == "principal":
            record = self.state.principals.get(principal)
            if name == "name":
                return principal
            if name == "kind":
                return principal.split(":", 1)[0]
            if name == "groups":
                return sorted(record.groups) if record else []
            return record.attributes.get(name, _MISSING) if record else _MISSING
        parsed = parse_resource(resource)
        special = {"kind": parsed.kind, "text": parsed.text, "name": parsed.name()}
        if name == "column":
            return parsed.columns[0] if parsed.columns else _MISSING
        if name in special:
            value = special[name]
            return _MISSING if value is None else value
        return self.attributes(resource).get(name, _MISSING)

    # ---- questions over every principal --------------------------------------------------

    def could(
        self, action: str, resource: str, context: Context = NO_CONTEXT, now: float | None = None
    ) -> list[Decision]:
        """The decision of every user and service principal on ``action`` on ``resource``:
        "who could read X" (with the state of another time: "who could, then")."""
        return [
            self.decide(name, action, resource, context, now=now)
            for name in sorted(self.state.principals)
            if not name.startswith("group:")
        ]


def _with(decision: Decision, resource: str) -> Decision:
    """A column's decision as the decision of the whole request."""
    return Decision(
        decision.allowed, decision.principal, decision.action, resource, decision.reason,
        decision.rule, decision.masked, decision.detail,
    )  # fmt: skip


def _holds(condition: Condition, read: Any) -> bool:
    left = read(condition.attr)
    op = condition.op
    if op == "exists":
        return left is not _MISSING
    if op == "missing":
        return left is _MISSING
    right = read(condition.ref) if condition.ref is not None else condition.value
    if left is _MISSING or right is _MISSING:
        return False
    try:
        if op == "eq":
            return bool(left == right)
        if op == "ne":
            return bool(left != right)
        if op == "in":
            return isinstance(right, list | tuple) and left in right
        if op == "not_in":
            return isinstance(right, list | tuple) and left not in right
        if op == "contains":
            return isinstance(left, list | tuple) and right in left
        if op == "not_contains":
            return isinstance(left, list | tuple) and right not in left
        if op == "lt":
            return bool(left < right)
        if op == "le":
            return bool(left <= right)
        if op == "gt":
            return bool(left > right)
        return bool(left >= right)
    except TypeError:  # values of different kinds do not compare: the condition is false
        return False
