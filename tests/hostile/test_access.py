"""Hostile input to ``fmforge access`` and ``fmforge audit``: names, patterns, policy files,
tokens, checkpoints and keys that are wrong. Each is refused in one line naming the problem,
and the repository is left exactly as it was."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fmforge.access.audit import Checkpointer
from fmforge.access.checkpoints import SigningKey
from fmforge.access.control import AccessControl
from fmforge.errors import InvalidPolicy
from fmforge.repository import Repository
from tests.hostile.harness import api_refused, cli_refused

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a principal, a group, a grant and an exported checkpoint, and the
    hostile files beside it."""
    root = tmp_path_factory.mktemp("access")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FMFORGE_USER", "tester@fmforge")
        with Repository.init(root) as repo:
            control = AccessControl(repo)
            control.add_principal("user:alice")
            control.add_principal("group:team")
            control.grant("user:alice", "dataset/yt", role="viewer")
            checkpointer = Checkpointer(repo)
            signed = checkpointer.checkpoint()
            control.add_principal("user:bob")  # an event no checkpoint covers yet
    files = root / "hostile"
    files.mkdir()
    (files / "good.checkpoint").write_text(signed.note)
    (files / "tampered.checkpoint").write_text(signed.note.replace(f"\n{signed.size}\n", "\n99\n"))
    (files / "garbage.checkpoint").write_bytes(b"\x00\xffnot a note")
    other = SigningKey.generate(signed.origin)
    (files / "other.pub").write_text(other.verifier.encode())
    policies = {
        "bad-yaml.yaml": "rules: [\n",
        "unknown-field.yaml": "rulez: []\n",
        "bad-action.yaml": "rules:\n  - {id: r, effect: permit, actions: [fly]}\n",
        "bad-pattern.yaml": (
            "rules:\n  - {id: r, effect: permit, actions: [read], resources: ['dataset/x#c']}\n"
        ),
        "keymatch-trap.yaml": "resources:\n  'dataset/*x/**/y': {licence: MIT}\n",
        "bomb.yaml": BOMB,
        "list.yaml": "- version: 1\n",
        "binary.yaml": "\x00\x01\x02",
        "dup-ids.yaml": (
            "rules:\n  - {id: r, effect: permit, actions: [read]}\n"
            "  - {id: r, effect: forbid, actions: [read]}\n"
        ),
    }
    for name, text in policies.items():
        (files / name).write_text(text)
    return root


def _key_readable_by_others(root: Path) -> Callable[[], None]:
    key = root / ".fmforge" / "keys" / "checkpoint.key"
    key.chmod(0o644)
    return lambda: key.chmod(0o600)


CASES: list[tuple[str, list[str], str]] = [
    ("principal-with-space", ["access", "user", "add", "al ice"], "invalid principal"),
    ("principal-bad-kind", ["access", "user", "add", "robot:r2"], "kind must be one of"),
    ("principal-exists", ["access", "user", "add", "alice"], "exists already"),
    ("attribute-without-value", ["access", "user", "add", "c", "--attr", "org"], "KEY=VALUE"),
    ("attribute-bad-name", ["access", "user", "add", "c", "--attr", "Org=x"], "snake_case"),
    (
        "member-not-a-group",
        ["access", "member", "user:alice", "alice"],
        "kind must be one of group",
    ),
    ("member-unknown", ["access", "member", "group:team", "ghost"], "no principal user:ghost"),
    (
        "grant-columns-without-version",
        ["access", "grant", "alice", "dataset/yt#author", "--role", "viewer"],
        "columns need a version",
    ),
    (
        "grant-doublestar-inside",
        ["access", "grant", "alice", "dataset/**/x", "--role", "viewer"],
        "may only be the last",
    ),
    (
        "grant-unknown-kind",
        ["access", "grant", "alice", "datasets/yt", "--role", "viewer"],
        "unknown kind",
    ),
    (
        "grant-unknown-role",
        ["access", "grant", "alice", "dataset/yt", "--role", "superuser"],
        "unknown role",
    ),
    ("grant-nothing", ["access", "grant", "alice", "dataset/yt"], "a role or at least one action"),
    (
        "grant-unknown-action",
        ["access", "grant", "alice", "dataset/yt", "--action", "fly"],
        "unknown action 'fly'",
    ),
    (
        "grant-unknown-principal",
        ["access", "grant", "ghost", "dataset/yt", "--role", "viewer"],
        "no principal",
    ),
    ("revoke-unknown-grant", ["access", "revoke", "grant_0123456789abcdef"], "no grant"),
    ("token-for-a-group", ["access", "token", "issue", "group:team"], "is a group"),
    (
        "token-zero-lifetime",
        ["access", "token", "issue", "alice", "--expires-in", "0"],
        "positive duration",
    ),
    (
        "token-word-lifetime",
        ["access", "token", "issue", "alice", "--expires-in", "soon"],
        "positive duration",
    ),
    (
        "token-unknown-action",
        ["access", "token", "issue", "alice", "--action", "fly"],
        "unknown action",
    ),
    (
        "token-bad-scope",
        ["access", "token", "issue", "alice", "--resource", "dataset/a b"],
        "segment 'a b'",
    ),
    ("token-revoke-unknown", ["access", "token", "revoke", "tok_0123456789abcdef"], "no token"),
    ("policy-missing-file", ["access", "policy", "set", "{files}/absent.yaml"], "No such file"),
    ("policy-directory", ["access", "policy", "set", "{files}"], "directory"),
    ("policy-bad-yaml", ["access", "policy", "set", "{files}/bad-yaml.yaml"], "not valid YAML"),
    (
        "policy-unknown-field",
        ["access", "policy", "set", "{files}/unknown-field.yaml"],
        "1:1: rulez is not a field here",
    ),
    (
        "policy-bad-action",
        ["access", "policy", "set", "{files}/bad-action.yaml"],
        "unknown action 'fly'",
    ),
    (
        "policy-bad-pattern",
        ["access", "policy", "set", "{files}/bad-pattern.yaml"],
        "columns need a version",
    ),
    (
        "policy-doublestar-inside",
        ["access", "policy", "set", "{files}/keymatch-trap.yaml"],
        "may only be the last",
    ),
    ("policy-alias-bomb", ["access", "policy", "set", "{files}/bomb.yaml"], "aliases expanded"),
    (
        "policy-not-a-mapping",
        ["access", "policy", "set", "{files}/list.yaml"],
        "a policy is a mapping",
    ),
    ("policy-binary", ["access", "policy", "set", "{files}/binary.yaml"], "not valid YAML"),
    (
        "policy-duplicate-rule-ids",
        ["access", "policy", "set", "{files}/dup-ids.yaml"],
        "used twice",
    ),
    ("check-unknown-action", ["access", "check", "alice", "fly", "dataset/yt"], "unknown action"),
    ("check-bad-resource", ["access", "check", "alice", "read", "dataset/y t"], "segment 'y t'"),
    (
        "check-pattern-not-resource",
        ["access", "check", "alice", "read", "dataset/*"],
        "segment '*'",
    ),
    ("prove-seq-zero", ["audit", "prove", "--seq", "0"], "no event seq 0"),
    ("prove-seq-beyond", ["audit", "prove", "--seq", "999"], "no event seq 999"),
    (
        "prove-not-yet-checkpointed",
        ["audit", "prove", "--seq", "6"],
        "no signed checkpoint covers seq 6",
    ),
    (
        "prove-bad-checkpoint",
        ["audit", "prove", "--seq", "2", "--checkpoint", "{files}/garbage.checkpoint"],
        "not a utf-8 signed note",
    ),
    (
        "verify-missing-file",
        ["audit", "verify", "--from", "{files}/absent.checkpoint"],
        "No such file",
    ),
    (
        "verify-garbage",
        ["audit", "verify", "--from", "{files}/garbage.checkpoint"],
        "not a utf-8 signed note",
    ),
    (
        "verify-tampered-size",
        ["audit", "verify", "--from", "{files}/tampered.checkpoint"],
        "does not verify",
    ),
    (
        "verify-other-key",
        ["audit", "verify", "--from", "{files}/good.checkpoint", "--key", "{files}/other.pub"],
        "no signature by a known key",
    ),
    (
        "verify-junk-key",
        ["audit", "verify", "--from", "{files}/good.checkpoint", "--key", "junk"],
        "not a verifier key",
    ),
    (
        "verify-to-older-than-from",
        [
            "audit",
            "verify",
            "--from",
            "{files}/good.checkpoint",
            "--to",
            "{files}/tampered.checkpoint",
        ],
        "does not verify",
    ),
    ("who-read-pattern", ["audit", "who-read", "dataset/**"], "segment '\\*\\*'"),
    ("denied-bad-time", ["audit", "denied", "--since", "yesterday"], "not an ISO date"),
    (
        "could-read-bad-time",
        ["audit", "could-read", "dataset/yt@1", "--at", "noon"],
        "not an ISO date",
    ),
    (
        "could-read-unknown-action",
        ["audit", "could-read", "dataset/yt@1", "--action", "fly"],
        "unknown action",
    ),
]


@pytest.mark.parametrize(("args", "contains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(prepared: Path, args: list[str], contains: str) -> None:
    files = str(prepared / "hostile")
    line = cli_refused(prepared, *[a.replace("{files}", files) for a in args])
    assert re.search(contains.lower(), line.lower()), line


def test_a_signing_key_others_can_read_is_refused(prepared: Path) -> None:
    restore = _key_readable_by_others(prepared)
    try:
        cli_refused(prepared, "audit", "checkpoint", contains="chmod 600")
    finally:
        restore()


@pytest.mark.parametrize(
    "resource", ["", "dataset/", "dataset/yt@", "dataset/yt@1#", "model/m/branch", "run/a/b"]
)
def test_authorize_refuses_bad_resources_before_recording(prepared: Path, resource: str) -> None:
    with Repository.open(prepared) as repo:
        control = AccessControl(repo)
        api_refused(
            prepared, lambda: control.authorize("user:alice", "read", resource), InvalidPolicy
        )
