"""``fmforge access`` and ``fmforge audit`` through the real command line."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from fmforge.access.authorizer import Context
from fmforge.access.control import AccessControl
from fmforge.cli.app import app
from fmforge.repository import Repository
from tests.clirunner import fm
from tests.unit.access import standalone_verifier as S

POLICY = """\
resources:
  dataset/yt:
    licence: CC-BY-NC-4.0
    consent_purposes: [research]
    pii_columns: [author]
"""


def test_principals_grants_policy_and_checks(repo: Repository, tmp_path: Path) -> None:
    root = repo.root
    code, out = fm(root, "access", "user", "add", "alice", "--pii-cleared", "--attr", "org=acme")
    assert (code, out.strip()) == (
        0, "added user:alice (no access yet: `fmforge access grant user:alice RESOURCE --role R`)",
    )  # fmt: skip
    assert fm(root, "access", "user", "add", "group:team")[0] == 0
    assert (
        fm(root, "access", "member", "group:team", "alice")[1].strip()
        == "user:alice joined group:team"
    )
    code, out = fm(root, "access", "grant", "group:team", "dataset/yt", "--role", "owner")
    assert code == 0
    assert out.startswith("grant_")
    (tmp_path / "policy.yaml").write_text(POLICY)
    code, out = fm(root, "access", "policy", "set", str(tmp_path / "policy.yaml"))
    assert "in force: 0 rule(s)" in out
    assert (
        "unchanged: nothing recorded"
        in fm(root, "access", "policy", "set", str(tmp_path / "policy.yaml"))[1]
    )
    assert "licence: CC-BY-NC-4.0" in fm(root, "access", "policy", "show")[1]
    code, out = fm(
        root, "access", "check", "alice", "use", "dataset/yt@3", "--purpose", "commercial"
    )
    assert code == 1
    assert out.startswith("denied: forbid:licence (dataset/yt@3 is licensed CC-BY-NC-4.0")
    code, out = fm(root, "access", "check", "alice", "read", "dataset/yt@3#author,text")
    assert code == 0
    assert out.startswith("allowed: grant:grant_")
    assert "masked: author" in out
    assert fm(root, "access", "check", "bob", "read", "dataset/yt@3")[1].startswith(
        "denied: no_grant"
    )
    assert "user:alice" in fm(root, "access", "user", "ls")[1]
    assert "group:team" in fm(root, "access", "grants")[1]


def test_tokens_are_shown_once(repo: Repository) -> None:
    root = repo.root
    fm(root, "access", "user", "add", "service:ci")
    result = CliRunner().invoke(
        app, ["--store", str(root), "access", "token", "issue", "service:ci", "--resource",
              "dataset/*", "--action", "read", "--expires-in", "12h", "--note", "nightly"],
    )  # fmt: skip
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("fmf_")
    assert len(token) == 47
    assert "shown once" in result.stderr
    listing = fm(root, "access", "token", "ls")[1]
    assert "service:ci" in listing
    assert "dataset/*: read" in listing
    assert "nightly" in listing
    assert token not in listing
    assert token not in (root / ".fmforge" / "ledger.db").read_bytes().decode("latin-1")
    token_id = listing.split("tok_")[1].split()[0].rstrip("…")
    with Repository.open(root) as opened:
        (full_id,) = [
            t for t in AccessControl(opened).state().tokens if t.startswith("tok_" + token_id)
        ]
    assert (
        fm(root, "access", "token", "revoke", full_id, "--reason", "rotated")[1].strip()
        == f"revoked {full_id}"
    )
    assert "revoked" in fm(root, "access", "token", "ls")[1]


def test_checkpoints_proofs_and_verification(repo: Repository, tmp_path: Path) -> None:
    root = repo.root
    fm(root, "access", "user", "add", "alice")
    code, out = fm(root, "audit", "checkpoint", "--export", str(tmp_path / "exported"))
    assert code == 0
    assert "signed size 2" in out
    verifier = fm(root, "audit", "key")[1].strip()
    assert (root / ".fmforge" / "keys" / "checkpoint.pub").read_text().strip() == verifier
    kept = tmp_path / "kept.checkpoint"
    kept.write_bytes((tmp_path / "exported" / "latest.checkpoint").read_bytes())

    result = CliRunner().invoke(app, ["--store", str(root), "audit", "prove", "--seq", "2"])
    assert result.exit_code == 0, result.output
    proof = json.loads(result.stdout)
    _, size, root_hash = S.verify_checkpoint(proof["checkpoint"], verifier)
    leaf = hashlib.sha256(b"\0" + bytes.fromhex(proof["event_hash"])).digest()
    path = [base64.b64decode(p) for p in proof["proof"]]
    assert S.verify_inclusion(proof["leaf_index"], size, leaf, path, root_hash)

    fm(root, "access", "user", "add", "bob")
    code, out = fm(root, "audit", "verify", "--from", str(kept))
    assert code == 0, out
    assert out.startswith("ok: size 4 extends checkpoint size 2")
    fm(root, "audit", "checkpoint", "--export", str(tmp_path / "exported"))
    newer = tmp_path / "exported" / "latest.checkpoint"
    code, out = fm(
        root, "audit", "verify", "--from", str(kept), "--to", str(newer), "--key", verifier
    )
    assert (code, out.split(" (")[0]) == (0, "ok: size 4 extends checkpoint size 2")


def test_who_read_denied_and_could_read(repo: Repository) -> None:
    control = AccessControl(repo)
    control.add_principal("user:alice")
    control.add_principal("user:bob")
    grant = control.grant("user:bob", "dataset/yt", role="viewer")
    control.authorize("user:bob", "read", "dataset/yt@1", Context("research"))
    control.authorize("user:alice", "read", "dataset/yt@1")
    time.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    control.revoke_grant(grant)
    root = repo.root
    out = fm(root, "audit", "who-read", "dataset/yt")[1]
    assert "user:bob" in out
    assert "1 principal(s)" in out
    assert "0 principal(s)" in fm(root, "audit", "who-read", "dataset/yt", "--since", between)[1]
    out = fm(root, "audit", "denied", "--actor", "alice")[1]
    assert "no_grant" in out
    assert "1 denial(s)" in out
    assert "0 of 2 principal(s)" in fm(root, "audit", "could-read", "dataset/yt@1")[1]
    out = fm(root, "audit", "could-read", "dataset/yt@1", "--at", between)[1]
    assert "user:bob" in out
    assert "1 of 2 principal(s)" in out
