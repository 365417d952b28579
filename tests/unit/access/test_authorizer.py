"""Decisions: default deny, grants on parents cover children, forbid wins, conditions, and the
compliance rules (pii, licence through lineage, retention, protection, unlearning)."""

from __future__ import annotations

import pytest

from fmforge.access.authorizer import Authorizer, Context
from fmforge.access.policy import ROLES, PolicySpec, load_policy
from fmforge.access.principals import Principal
from fmforge.access.state import AccessState, Grant
from fmforge.access.tokens import Scope, TokenRecord
from fmforge.errors import AccessDenied

POLICY = """\
resources:
  dataset/yt:
    licence: CC-BY-NC-4.0
    consent_purposes: [research]
    pii_columns: [author]
  dataset/open:
    licence: CC-BY-4.0
    pii_columns: [email]
    pii_mode: deny
  dataset/old:
    retention_until: 2020-01-01T00:00:00Z
  model/m/branch/main:
    protected: true
rules:
  - id: interns-no-export
    effect: forbid
    principals: [group:interns]
    actions: [export]
  - id: auditors-read-runs
    effect: permit
    principals: [group:auditors]
    actions: [read]
    resources: ["run/*"]
    when: [{attr: context.ticket, op: exists}]
  - id: same-org
    effect: forbid
    actions: [read]
    resources: ["dataset/partner*"]
    unless: [{attr: principal.org, op: eq, ref: resource.org}]
  - id: partner-attrs
    effect: permit
    actions: [list]
    resources: ["dataset/partner"]
"""

RESEARCH, COMMERCIAL = Context("research"), Context("commercial")


def _state(policy: str = POLICY, **grants: tuple[str, str, str]) -> AccessState:
    principals = {
        "user:alice": Principal("user:alice", {"pii_cleared": True, "org": "acme"}),
        "user:bob": Principal("user:bob", {"org": "other"}, frozenset({"group:interns"})),
        "user:eve": Principal("user:eve", {}, frozenset({"group:auditors"})),
        "user:gone": Principal("user:gone", {}, disabled=True),
        "service:ci": Principal("service:ci", {}),
    }
    built = {
        gid: Grant(gid, who, resource, frozenset(ROLES[role]))
        for gid, (who, resource, role) in grants.items()
    }
    spec = load_policy(policy) if policy else PolicySpec()
    return AccessState(principals, built, {}, spec)


@pytest.fixture
def authz() -> Authorizer:
    return Authorizer(
        _state(
            a=("user:alice", "dataset/yt", "owner"),
            b=("group:interns", "dataset/*", "maintainer"),
            c=("user:alice", "model/m", "editor"),
            d=("user:alice", "dataset/old", "viewer"),
            e=("user:alice", "dataset/open", "maintainer"),
            f=("user:gone", "repository", "admin"),
            g=("user:bob", "dataset/partner", "viewer"),
            h=("user:alice", "dataset/partner", "viewer"),
        )
    )


class TestDefaults:
    def test_default_deny(self, authz: Authorizer) -> None:
        decision = authz.decide("service:ci", "read", "dataset/yt@3")
        assert (decision.allowed, decision.reason) == (False, "no_grant")
        assert authz.decide("user:nobody", "read", "dataset/yt").detail == "unknown principal"
        with pytest.raises(AccessDenied, match=r"service:ci may not read dataset/yt@3 \(no_grant"):
            decision.require()

    def test_a_grant_on_a_parent_covers_children_present_and_future(
        self, authz: Authorizer
    ) -> None:
        for resource in ("dataset/yt", "dataset/yt@1", "dataset/yt@99#text"):
            decision = authz.decide("user:alice", "read", resource, RESEARCH)
            assert decision.allowed, resource
            assert decision.reason == "grant:a"
        assert not authz.decide("user:alice", "read", "dataset/ytx@1").allowed
        assert not authz.decide("user:alice", "read", "dataset").allowed

    def test_group_grants_reach_members(self, authz: Authorizer) -> None:
        assert authz.decide("user:bob", "write", "dataset/anything@1").reason == "grant:b"

    def test_a_disabled_principal_keeps_nothing(self, authz: Authorizer) -> None:
        decision = authz.decide("user:gone", "read", "audit")
        assert (decision.allowed, decision.reason) == (False, "disabled")


class TestRules:
    def test_forbid_wins_over_a_grant(self, authz: Authorizer) -> None:
        assert authz.decide("user:bob", "read", "dataset/x@1").allowed
        decision = authz.decide("user:bob", "export", "dataset/x@1")
        assert (decision.allowed, decision.reason, decision.rule) == (
            False, "forbid:interns-no-export", "interns-no-export",
        )  # fmt: skip

    def test_a_permit_rule_with_a_condition_on_the_context(self, authz: Authorizer) -> None:
        assert not authz.decide("user:eve", "read", "run/r1").allowed
        ticket = Context(None, (("ticket", "SEC-1"),))
        decision = authz.decide("user:eve", "read", "run/r1", ticket)
        assert (decision.allowed, decision.reason) == (True, "permit:auditors-read-runs")
        assert not authz.decide("user:eve", "read", "run", ticket).allowed  # run/* not run

    def test_unless_compares_two_attributes(self, authz: Authorizer) -> None:
        authz.set_facts("dataset/partner", {"org": "acme"})
        assert authz.decide("user:alice", "read", "dataset/partner@1").allowed
        decision = authz.decide("user:bob", "read", "dataset/partner@1")
        assert decision.reason == "forbid:same-org"
        assert authz.decide("user:bob", "list", "dataset/partner").allowed  # list not forbidden


class TestPii:
    def test_masked_for_the_wrong_purpose_intact_for_the_right_one(self, authz: Authorizer) -> None:
        clear = authz.decide("user:alice", "read", "dataset/yt@3#author,text", RESEARCH)
        assert (clear.allowed, clear.masked) == (True, ())
        masked = authz.decide("user:alice", "read", "dataset/yt@3#author,text", COMMERCIAL)
        assert (masked.allowed, masked.masked) == (True, ("author",))
        assert "consent covers research" in masked.detail

    def test_masked_without_read_pii_or_clearance(self, authz: Authorizer) -> None:
        bob = authz.decide("user:bob", "read", "dataset/yt@3#author,text", RESEARCH)
        assert bob.masked == ("author",)
        whole = authz.decide("user:bob", "read", "dataset/yt@3", RESEARCH)
        assert (whole.allowed, whole.masked) == (True, ("author",))
        text = authz.decide("user:bob", "read", "dataset/yt@3#text", RESEARCH)
        assert (text.allowed, text.masked) == (True, ())

    def test_denied_where_the_dataset_says_deny(self, authz: Authorizer) -> None:
        decision = authz.decide("user:alice", "read", "dataset/open@1#email,name", RESEARCH)
        assert (decision.allowed, decision.reason) == (False, "forbid:pii")
        assert "no grant gives read_pii" in decision.detail
        assert not authz.decide("user:alice", "read", "dataset/open@1").allowed
        assert authz.decide("user:alice", "read", "dataset/open@1#name").allowed


class TestLicence:
    def test_non_commercial_refuses_commercial_use_and_export(self, authz: Authorizer) -> None:
        for action in ("use", "export"):
            decision = authz.decide("user:alice", action, "dataset/yt@3", COMMERCIAL)
            assert (decision.allowed, decision.reason) == (False, "forbid:licence")
            assert "CC-BY-NC-4.0" in decision.detail
            assert authz.decide("user:alice", action, "dataset/yt@3", RESEARCH).allowed
        assert authz.decide("user:alice", "read", "dataset/yt@3", COMMERCIAL).allowed

    def test_and_so_does_a_model_trained_from_it(self, authz: Authorizer) -> None:
        assert authz.decide("user:alice", "use", "model/m@c1", COMMERCIAL).allowed
        authz.set_facts("model/m@c1", sources=["run/r1"])
        authz.set_facts("run/r1", sources=["dataset/open@2", "dataset/yt@3"])
        decision = authz.decide("user:alice", "use", "model/m@c1", COMMERCIAL)
        assert (decision.allowed, decision.reason) == (False, "forbid:licence")
        assert "made from dataset/yt@3" in decision.detail
        assert authz.decide("user:alice", "use", "model/m@c1", RESEARCH).allowed
        assert authz.decide("user:alice", "use", "model/m@c2", COMMERCIAL).allowed

    def test_a_lineage_cycle_ends(self, authz: Authorizer) -> None:
        authz.set_facts("model/m@a", sources=["model/m@b"])
        authz.set_facts("model/m@b", sources=["model/m@a"])
        assert authz.decide("user:alice", "use", "model/m@a", COMMERCIAL).allowed


class TestOtherCompliance:
    def test_retention_ends_reads(self, authz: Authorizer) -> None:
        decision = authz.decide("user:alice", "read", "dataset/old@1")
        assert (decision.allowed, decision.reason) == (False, "retention")
        assert authz.decide("user:alice", "read", "dataset/old@1", now=1.0e9).allowed
        assert authz.decide("user:alice", "list", "dataset/old").allowed

    def test_protected_branches_need_bypass(self, authz: Authorizer) -> None:
        decision = authz.decide("user:alice", "commit", "model/m/branch/main")
        assert (decision.allowed, decision.reason) == (False, "forbid:protected")
        assert authz.decide("user:alice", "commit", "model/m/branch/dev").allowed
        owner = Authorizer(_state(a=("user:alice", "model/m", "owner")))
        assert owner.decide("user:alice", "commit", "model/m/branch/main").allowed

    def test_unlearning_blocks_use_of_derived_models(self, authz: Authorizer) -> None:
        authz.set_facts("model/m@c1", sources=["dataset/x@1"])
        authz.set_facts("dataset/x@1", {"needs_unlearning": True})
        decision = authz.decide("user:alice", "use", "model/m@c1", RESEARCH)
        assert (decision.allowed, decision.reason) == (False, "forbid:unlearning")

    def test_compliance_switched_off(self) -> None:
        off = "compliance: {pii: 'off', licence: false, retention: false}\n" + POLICY
        authz = Authorizer(_state(off, a=("user:bob", "dataset", "maintainer")))
        assert authz.decide("user:bob", "read", "dataset/yt@3#author").masked == ()
        assert authz.decide("user:bob", "use", "dataset/yt@3", COMMERCIAL).allowed
        assert authz.decide("user:bob", "read", "dataset/old@1").allowed


class TestTokensAndCache:
    def test_a_token_narrows_to_its_scope(self, authz: Authorizer) -> None:
        token = TokenRecord(
            "tok_0000000000000001", "user:alice", "0" * 64,
            (Scope("dataset/yt@*#text", frozenset({"read"})),), None,
        )  # fmt: skip
        ok = authz.decide("user:alice", "read", "dataset/yt@3#text", token=token)
        assert ok.allowed
        out = authz.decide("user:alice", "read", "dataset/yt@3#author,text", token=token)
        assert (out.allowed, out.reason) == (False, "token_scope")
        assert not authz.decide("user:alice", "use", "dataset/yt@3#text", token=token).allowed

    def test_new_facts_clear_cached_decisions(self, authz: Authorizer) -> None:
        assert authz.decide("user:alice", "use", "model/m@c9", COMMERCIAL).allowed
        authz.set_facts("model/m@c9", sources=["dataset/yt@1"])
        assert not authz.decide("user:alice", "use", "model/m@c9", COMMERCIAL).allowed

    def test_who_could(self, authz: Authorizer) -> None:
        allowed = [d.principal for d in authz.could("read", "dataset/yt@3") if d.allowed]
        assert allowed == ["user:alice", "user:bob"]
