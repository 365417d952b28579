"""Signed notes and checkpoints in the C2SP formats, and their keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fmforge.access.checkpoints import (
    Checkpoint,
    DirectorySink,
    SigningKey,
    VerifierKey,
    export_checkpoint,
    load_signing_key,
    open_note,
    sign_note,
    write_secret,
)
from fmforge.errors import ConfigError, ProofFailed
from tests.unit.access import standalone_verifier as S

ROOT = bytes(range(32))


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("example.com/log")


def test_the_checkpoint_text_and_signature_line(key: SigningKey) -> None:
    signed = Checkpoint("example.com/log", 42, ROOT).signed(key)
    text, _, signatures = signed.note.partition("\n\n")
    assert text == f"example.com/log\n42\n{base64.b64encode(ROOT).decode()}"
    (line,) = signatures.splitlines()
    dash, name, blob = line.split(" ")
    assert (dash, name) == ("\u2014", "example.com/log")
    assert base64.b64decode(blob)[:4] == key.verifier.key_id
    assert Checkpoint.open(signed.note, [key.verifier]) == signed
    assert S.verify_checkpoint(signed.note, key.verifier.encode()) == ("example.com/log", 42, ROOT)


def test_keys_round_trip_in_the_sumdb_note_form(key: SigningKey) -> None:
    verifier = VerifierKey.parse(key.verifier.encode())
    assert verifier == key.verifier
    assert key.verifier.encode().startswith("example.com/log+")
    again = SigningKey.parse(key.encode(), "k")
    assert again.verifier == key.verifier
    wrong_id = key.verifier.encode().replace(key.verifier.key_id.hex(), "00000000")
    with pytest.raises(ProofFailed, match="key id does not match"):
        VerifierKey.parse(wrong_id)


GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
    "otpRZb6KE6RyyBwJnAM=\n"
)
"""The example of golang.org/x/mod/sumdb/note's documentation (BSD-3-Clause, the Go Authors):
a key pair and the note Go's implementation signs with it. The signing key's base64 holds a
'+', which a parser splitting on every '+' gets wrong."""


def test_go_sumdb_note_interoperates() -> None:
    """Ed25519 is deterministic: our signer must reproduce Go's note byte for byte, and our
    verifier and the standalone one accept it."""
    key = SigningKey.parse(GO_SIGNER, "go example")
    assert key.verifier.encode() == GO_VERIFIER
    text = GO_NOTE.split("\n\n")[0] + "\n"
    assert sign_note(text, key) == GO_NOTE
    assert open_note(GO_NOTE, [VerifierKey.parse(GO_VERIFIER)]) == text
    with pytest.raises(ProofFailed, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [key.verifier])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: n.replace("\n42\n", "\n43\n"), "does not verify"),
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.rstrip("\n"), "no blank line"),
        (lambda n: n + "garbage\n", "malformed signature line"),
        (lambda n: n.replace("\u2014 example.com/", "\u2014 other.com/"), "no signature by"),
        (lambda n: n.replace("example.com/log\n42", "example.com/log\x0742"), "control characters"),
        (lambda n: n + ("\u2014 x " + "A" * 100 + "\n") * 40, "1 to 32 signatures"),
    ],
)  # fmt: skip
def test_altered_notes_are_refused(key: SigningKey, mangle: object, message: str) -> None:
    signed = Checkpoint("example.com/log", 42, ROOT).signed(key)
    with pytest.raises(ProofFailed, match=message):
        Checkpoint.open(mangle(signed.note), [key.verifier])  # type: ignore[operator]


def test_a_signature_by_an_unknown_key_is_ignored_not_trusted(key: SigningKey) -> None:
    other = SigningKey.generate("example.com/log")  # same name, another key
    signed = Checkpoint("example.com/log", 1, ROOT).signed(other)
    with pytest.raises(ProofFailed, match="no signature by a known key"):
        Checkpoint.open(signed.note, [key.verifier])
    both = signed.note + sign_note(signed.body(), key).split("\n\n")[1]
    assert Checkpoint.open(both, [key.verifier]).size == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("o\n01\n" + base64.b64encode(ROOT).decode() + "\n", "not a decimal number"),
        ("o\n1\nnot base64!\n", "not base64"),
        ("o\n1\n" + base64.b64encode(b"short").decode() + "\n", "not 32 bytes"),
        ("o\n1\n", "origin, size and root hash"),
    ],
)
def test_bad_checkpoint_bodies(body: str, message: str) -> None:
    with pytest.raises(ProofFailed, match=message):
        Checkpoint.parse_body(body)


def test_key_files_are_private(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "keys" / "checkpoint.key"
    write_secret(path, key.encode().encode())
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signing_key(path).verifier == key.verifier
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_secret(path, b"x")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others \(mode 644\); run `chmod 600"):
        load_signing_key(path)


def test_exported_to_a_directory(tmp_path: Path, key: SigningKey) -> None:
    signed = Checkpoint("example.com/log", 7, ROOT).signed(key)
    names = export_checkpoint(signed, DirectorySink(tmp_path / "out"))
    assert names == ["00000000000000000007.checkpoint", "latest.checkpoint"]
    assert (tmp_path / "out" / "latest.checkpoint").read_text() == signed.note
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
