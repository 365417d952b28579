"""Access control on a real repository: every change an event, decisions recorded before
anything is released, the state at any seq rebuilt, and signed checkpoints that catch a history
rewritten, truncated or forked behind them."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import blake3
import pytest

from fmforge.access import events as ev
from fmforge.access.audit import (
    BackgroundCheckpointer,
    Checkpointer,
    prove_inclusion,
    recorded_checkpoints,
    verifier_key,
    verify_history,
)
from fmforge.access.authorizer import Context
from fmforge.access.checkpoints import Checkpoint
from fmforge.access.control import AccessControl
from fmforge.access.merkle import verify_consistency
from fmforge.access.policy import load_policy
from fmforge.access.state import STATE_TYPES, replay
from fmforge.access.tokens import Scope
from fmforge.access.views import AccessLogView, AccessView
from fmforge.errors import InvalidPolicy, ProofFailed, Unauthenticated
from fmforge.ledger.events import row_hash
from fmforge.repository import Repository
from tests.unit.access import standalone_verifier as S

POLICY = """\
resources:
  dataset/yt:
    licence: CC-BY-NC-4.0
    consent_purposes: [research]
    pii_columns: [author]
"""


def _types(repo: Repository, stream_prefix: str = "access/") -> list[str]:
    return [e.type for e in repo.ledger.read_all(streams=stream_prefix)]


class TestChanges:
    def test_each_change_is_one_validated_event_and_the_view_is_the_replay(
        self, repo: Repository
    ) -> None:
        control = AccessControl(repo)
        control.add_principal("user:alice", {"pii_cleared": True, "purposes": ["research"]})
        control.add_principal("group:team")
        control.add_member("group:team", "user:alice")
        grant = control.grant("group:team", "dataset/*", role="viewer")
        control.grant("user:alice", "model/m", actions=["use", "read"])
        control.set_policy(load_policy(POLICY), "policy.yaml")
        issued = control.issue_token("user:alice", expires_in=60)
        control.revoke_grant(grant, "moved teams")
        control.update_principal("user:alice", disabled=True)
        # Putting a policy in force turns access control on: the one doing it becomes the
        # first admin, and each change after is decided and recorded (AccessGranted).
        assert _types(repo) == [
            "PrincipalCreated", "PrincipalCreated", "GroupMemberAdded", "GrantAdded",
            "GrantAdded", "PrincipalCreated", "GrantAdded", "PolicySet",
            "AccessGranted", "TokenIssued", "AccessGranted", "GrantRevoked",
            "AccessGranted", "PrincipalUpdated",
        ]  # fmt: skip
        (token_event,) = repo.ledger.read_stream(ev.TOKENS)
        assert issued.token not in json.dumps(token_event.data)
        assert token_event.meta["actor"] == "tester@fmforge"
        state = repo.view(AccessView)
        replayed = replay((e.seq, e.type, e.data) for e in repo.ledger.read_all(types=STATE_TYPES))
        assert AccessControl(repo).state_at(repo.ledger.head().seq) == replayed
        assert state == replayed
        assert state.principals["user:alice"].disabled
        assert next(iter(state.grants.values())).actions == {"read", "use"}
        assert repo.verify().view_differences == ()

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda c: c.add_principal("user:alice"), "exists already"),
            (lambda c: c.add_principal("alice"), "KIND:NAME"),
            (lambda c: c.add_principal("user:b", {"Bad-Name": 1}), "snake_case"),
            (lambda c: c.grant("user:nobody", "dataset/x", role="viewer"), "no principal"),
            (lambda c: c.grant("user:alice", "dataset/x", role="superuser"), "unknown role"),
            (lambda c: c.grant("user:alice", "dataset/x#c", role="viewer"), "need a version"),
            (lambda c: c.grant("user:alice", "dataset/x"), "a role or at least one action"),
            (lambda c: c.grant("user:alice", "dataset/x", actions=["fly"]), "unknown action"),
            (lambda c: c.issue_token("user:alice", expires_in=-1), "must be positive"),
            (lambda c: c.issue_token("group:g"), "no principal"),
            (lambda c: c.revoke_token("tok_0000000000000000"), "no token"),
            (lambda c: c.revoke_grant("grant_0000000000000000"), "no grant"),
            (lambda c: c.remove_member("group:g", "user:alice"), "not a member"),
            (lambda c: c.decide("user:alice", "fly", "dataset/x"), "unknown action"),
        ],
    )
    def test_refusals_record_nothing(self, repo: Repository, call: object, message: str) -> None:
        control = AccessControl(repo)
        control.add_principal("user:alice")
        before = repo.ledger.head().seq
        with pytest.raises(InvalidPolicy, match=message):
            call(control)  # type: ignore[operator]
        assert repo.ledger.head().seq == before

    def test_who_could_read_at_a_past_seq(self, repo: Repository) -> None:
        control = AccessControl(repo)
        control.add_principal("user:alice")
        control.add_principal("user:bob")
        grant = control.grant("user:bob", "dataset/yt", role="viewer")
        granted_at = repo.ledger.head().seq
        control.revoke_grant(grant)

        def could(at: int | None) -> list[str]:
            return [
                d.principal for d in control.could("read", "dataset/yt@1", at_seq=at) if d.allowed
            ]

        assert could(None) == []
        assert could(granted_at) == ["user:bob"]
        assert could(granted_at - 1) == []


class TestDecisions:
    def test_every_request_is_one_event_before_release(self, repo: Repository) -> None:
        control = AccessControl(repo)
        control.add_principal("user:alice", {"pii_cleared": True})
        control.grant("user:alice", "dataset/yt", role="owner")
        control.set_policy(load_policy(POLICY))
        before = repo.ledger.head().seq
        read = control.authorize(
            "user:alice", "read", "dataset/yt@3#author,text", Context("commercial"),
            request_id="r-1", objects=["ab" * 32],
        )  # fmt: skip
        use = control.authorize("user:alice", "use", "dataset/yt@3", Context("commercial"))
        assert (read.allowed, read.masked, use.reason) == (True, ("author",), "forbid:licence")
        events = list(repo.ledger.read_all(before + 1))
        assert [(e.type, e.stream) for e in events] == [
            ("AccessGranted", "access/log/dataset/yt"),
            ("AccessDenied", "access/log/dataset/yt"),
        ]
        assert events[0].data["masked"] == ["author"]
        assert events[0].data["objects"] == ["ab" * 32]
        assert events[0].data["request_id"] == "r-1"
        assert events[1].data["reason"] == "forbid:licence"
        assert events[1].data["purpose"] == "commercial"

    def test_tokens_scoped_expired_and_revoked(self, repo: Repository) -> None:
        control = AccessControl(repo)
        control.add_principal("service:ci")
        control.grant("service:ci", "dataset", role="viewer")
        narrow = control.issue_token(
            "service:ci", scopes=(Scope("dataset/a", frozenset({"read"})),)
        )
        ok = control.authorize_token(narrow.token, "read", "dataset/a@1")
        assert (ok.allowed, ok.principal) == (True, "service:ci")
        assert control.authorize_token(narrow.token, "read", "dataset/b@1").reason == "token_scope"
        short = control.issue_token("service:ci", expires_in=0.05)
        time.sleep(0.1)
        with pytest.raises(Unauthenticated, match="expired"):
            control.authorize_token(short.token, "read", "dataset/a@1")
        control.revoke_token(narrow.token_id, "leaked")
        with pytest.raises(Unauthenticated, match="revoked"):
            control.authorize_token(narrow.token, "read", "dataset/a@1")
        with pytest.raises(Unauthenticated, match="unauthenticated"):
            control.authorize_token(None, "read", "dataset/a@1")
        denied = repo.view(AccessLogView).denied()
        assert [(d.principal, d.reason) for d in denied] == [
            ("anonymous", "unauthenticated"),
            ("service:ci", "revoked"),
            ("service:ci", "expired"),
            ("service:ci", "token_scope"),
        ]
        assert denied[1].token_id == narrow.token_id

    def test_who_read_between_two_times(self, repo: Repository) -> None:
        control = AccessControl(repo)
        for name in ("user:a", "user:b"):
            control.add_principal(name)
            control.grant(name, "dataset", role="viewer")
        control.authorize("user:a", "read", "dataset/yt@1#text")
        middle = time.time()
        time.sleep(0.01)
        control.authorize("user:b", "read", "dataset/yt@2")
        control.authorize("user:b", "read", "dataset/other@1")
        control.authorize("user:a", "write", "dataset/yt@2")  # denied: not a read
        log = repo.view(AccessLogView)
        assert [r.principal for r in log.who_read("dataset/yt")] == ["user:a", "user:b"]
        assert [r.principal for r in log.who_read("dataset/yt", since=middle)] == ["user:b"]
        assert [r.principal for r in log.who_read("dataset/yt", until=middle)] == ["user:a"]
        assert [r.principal for r in log.who_read("dataset/yt@1")] == ["user:a"]
        assert [d.action for d in log.denied("user:a")] == ["write"]


def _checkpoint(repo: Repository) -> Checkpoint:
    return Checkpointer(repo).checkpoint()


def _rewrite(root: Path, seq: int, data: dict[str, object]) -> None:
    """What an attacker with write access to ledger.db does to hide an edit: rewrite the
    payload and recompute every hash after it, so the chain verifies again."""
    db = sqlite3.connect(root / ".fmforge" / "ledger.db")
    with db:
        payload = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        db.execute(
            "UPDATE events SET data = ?, payload_hash = ? WHERE seq = ?",
            (payload, blake3.blake3(payload).digest(), seq),
        )
        rows = db.execute("SELECT * FROM events WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
        prev = rows[0][11]
        for row in rows:
            fixed = (*row[:11], prev, row[12])
            digest = row_hash(fixed)  # type: ignore[arg-type]
            db.execute(
                "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, row[0])
            )
            prev = digest
        db.execute("UPDATE ledger_head SET hash = ?", (prev,))
    db.close()


class TestCheckpoints:
    def test_signed_after_every_change_and_proofs_verify_standalone(self, repo: Repository) -> None:
        control = AccessControl(repo, checkpointer=Checkpointer(repo))
        control.add_principal("user:alice")
        control.grant("user:alice", "dataset/yt", role="viewer")
        signed = recorded_checkpoints(repo, [verifier_key(repo)])
        assert [c.size for c in signed] == [2, 4]  # after each change (its event included)
        verifier = verifier_key(repo).encode()
        proof = prove_inclusion(repo, 3).to_json()
        origin, size, root = S.verify_checkpoint(proof["checkpoint"], verifier)
        leaf = hashlib.sha256(b"\0" + bytes.fromhex(proof["event_hash"])).digest()
        path = [base64.b64decode(p) for p in proof["proof"]]
        assert (size, proof["leaf_index"]) == (4, 2)
        assert S.verify_inclusion(2, size, leaf, path, root)
        assert origin == signed[0].origin
        report = verify_history(repo, signed[0], signed[1])
        assert S.verify_consistency(2, 4, signed[0].root, signed[1].root, list(report.proof))

    def test_due_after_n_events_or_t_seconds(self, repo: Repository) -> None:
        checkpointer = Checkpointer(repo, every_events=3, every_seconds=3600)
        assert checkpointer.due() == "events"  # never signed
        checkpointer.checkpoint()
        assert checkpointer.due() is None
        control = AccessControl(repo)
        control.add_principal("user:a")
        control.add_principal("user:b")
        assert checkpointer.maybe_checkpoint() is None
        assert checkpointer.due(now=time.time() + 7200) == "interval"
        control.add_principal("user:c")
        assert checkpointer.maybe_checkpoint() is not None

    def test_a_background_checkpointer_signs_beside_the_writers(self, repo: Repository) -> None:
        control = AccessControl(repo)
        with BackgroundCheckpointer(repo, every_events=3, every_seconds=3600, poll_s=0.05):
            for i in range(8):
                control.add_principal(f"user:u{i}")
        signed = recorded_checkpoints(repo, [verifier_key(repo)])
        assert signed
        assert signed[-1].size >= 7
        for old in signed:
            verify_history(repo, old)

    def test_a_rewritten_history_is_caught_and_never_signed(self, repo: Repository) -> None:
        control = AccessControl(repo)
        control.add_principal("user:alice")
        control.add_principal("user:bob")
        old = _checkpoint(repo)
        control.add_principal("user:carol")
        _rewrite(repo.root, 2, {"principal": "user:mallory", "attributes": {}})
        with Repository.open(repo.root) as reopened:
            reopened.ledger.verify()  # the rewrite recomputed every hash: the chain passes
            with pytest.raises(ProofFailed, match="first 3 events are not those"):
                verify_history(reopened, old)
            with pytest.raises(ProofFailed, match="refusing to sign a fork"):
                Checkpointer(reopened).checkpoint()

    def test_truncation_behind_a_checkpoint(self, repo: Repository) -> None:
        control = AccessControl(repo)
        for name in ("user:a", "user:b", "user:c"):
            control.add_principal(name)
        old = _checkpoint(repo)
        db = sqlite3.connect(repo.root / ".fmforge" / "ledger.db")
        with db:
            (last,) = db.execute("SELECT hash FROM events WHERE seq = 2").fetchone()
            db.execute("DELETE FROM events WHERE seq > 2")
            db.execute("UPDATE ledger_head SET seq = 2, hash = ?", (last,))
        db.close()
        with Repository.open(repo.root) as reopened:
            reopened.ledger.verify()
            with pytest.raises(ProofFailed, match="has 2 events but a checkpoint covers 4"):
                verify_history(reopened, old)

    def test_a_fork_served_to_two_clients(self, repo: Repository, tmp_path: Path) -> None:
        control = AccessControl(repo)
        control.add_principal("user:a")
        first = _checkpoint(repo)
        control.add_principal("user:b")
        seen_by_one = _checkpoint(repo)
        key = Checkpointer(repo).key
        forged = Checkpoint(first.origin, seen_by_one.size, b"\x07" * 32).signed(key)
        with pytest.raises(ProofFailed, match="two different roots for the same size"):
            verify_consistency(seen_by_one.size, forged.size, seen_by_one.root, forged.root, [])
        assert not S.verify_consistency(
            seen_by_one.size, forged.size, seen_by_one.root, forged.root, []
        )
        with pytest.raises(ProofFailed, match="history was rewritten"):
            verify_history(repo, first, forged)
