"""Signed checkpoints of the ledger's Merkle tree, in the C2SP ``tlog-checkpoint`` format: a
``signed-note`` whose text is the origin, the tree size and the base64 root hash::

    fmforge/3f2a9c0d1e4b5a67
    1048576
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — fmforge/3f2a9c0d1e4b5a67 Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5...

Each signature line is an em dash, the key name, and base64 of the 4-byte key id followed by
the Ed25519 signature of the note text; the key id is the first 4 bytes of
``SHA-256(name || 0x0A || 0x01 || public key)`` (C2SP ``signed-note``). Keys are written in the
form Go's ``golang.org/x/mod/sumdb/note`` reads: ``PRIVATE+KEY+NAME+KEYID+BASE64`` (the
signing key, a file of mode 0600) and ``NAME+KEYID+BASE64`` (the verifier key, public).

A checkpoint is exported as files (``<size>.checkpoint`` and ``latest.checkpoint``) through a
``CheckpointSink``: a directory here; an S3 bucket (with object lock, optionally) in
``fmforge.access.checkpoint_s3``; a git remote would implement the same one-method protocol.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fmforge.errors import ConfigError, ProofFailed

ED25519 = 0x01
MAX_SIGNATURES = 32
MAX_NOTE_BYTES = 64 << 10
_NAME = re.compile(r"[^\s+]+\Z")
_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\Z")


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public: bytes

    def encode(self) -> str:
        raw = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """A verifier key ``NAME+KEYID+BASE64``; ``ProofFailed`` when it is not one."""
        parts = text.strip().split("+", 2)  # the base64 may hold '+' itself
        try:
            name, hex_id, raw = parts
            blob = base64.b64decode(raw, validate=True)
            ident = bytes.fromhex(hex_id)
        except (ValueError, binascii.Error):
            raise ProofFailed(
                f"not a verifier key (NAME+KEYID+BASE64): {text.strip()[:80]!r}"
            ) from None
        if not _NAME.match(name) or len(blob) != 33 or blob[0] != ED25519 or len(ident) != 4:
            raise ProofFailed(f"not an Ed25519 verifier key: {text.strip()[:80]!r}")
        if key_id(name, blob[1:]) != ident:
            raise ProofFailed(f"verifier key {name}: its key id does not match the key")
        return cls(name, ident, blob[1:])

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 key and the name it signs as (the log's origin)."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        if not _NAME.match(name):
            raise ConfigError(f"invalid key name {name!r}: no spaces or '+'")
        self.name = name
        self.private = private
        public = private.public_key().public_bytes_raw()
        self.verifier = VerifierKey(name, key_id(name, public), public)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, Ed25519PrivateKey.generate())

    def encode(self) -> str:
        seed = self.private.private_bytes_raw()
        raw = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str, where: str) -> SigningKey:
        parts = text.strip().split("+", 4)  # the base64 may hold '+' itself
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ConfigError(f"{where}: not a signing key (PRIVATE+KEY+NAME+KEYID+BASE64)")
        try:
            blob = base64.b64decode(parts[4], validate=True)
        except binascii.Error:
            raise ConfigError(f"{where}: the key is not base64") from None
        if len(blob) != 33 or blob[0] != ED25519:
            raise ConfigError(f"{where}: not an Ed25519 signing key")
        key = cls(parts[2], Ed25519PrivateKey.from_private_bytes(blob[1:]))
        if key.verifier.key_id.hex() != parts[3]:
            raise ConfigError(f"{where}: the key id does not match the key")
        return key

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite), its directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_secret(path: Path, what: str) -> bytes:
    """The bytes of a key file, refused when others may read it (as ssh refuses)."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return data


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey.parse(read_secret(path, "signing key").decode(errors="replace"), str(path))


# ---- notes and checkpoints -----------------------------------------------------------------


def sign_note(text: str, key: SigningKey) -> str:
    """``text`` (ending in a newline) signed: the C2SP signed-note form."""
    if not text.endswith("\n"):
        raise ValueError("a note's text ends with a newline")
    signature = key.sign(text.encode())
    blob = base64.b64encode(key.verifier.key_id + signature).decode()
    return f"{text}\n\u2014 {key.name} {blob}\n"


def open_note(note: str, verifiers: list[VerifierKey]) -> str:
    """The text of a signed note after checking it: every signature by a known key (name and
    key id) verifies, and at least one does; signatures by unknown keys are ignored."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise ProofFailed("the signed note is larger than 64 KiB")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise ProofFailed("the signed note holds control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise ProofFailed("not a signed note: no blank line before the signatures")
    text, lines = note[: split + 1], note[split + 2 :].splitlines()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise ProofFailed(f"a signed note carries 1 to {MAX_SIGNATURES} signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = 0
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or not _NAME.match(parts[1]):
            raise ProofFailed(f"malformed signature line {line[:80]!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise ProofFailed(f"signature of {parts[1]} is not base64") from None
        if len(blob) < 5:
            raise ProofFailed(f"signature of {parts[1]} is too short")
        verifier = known.get((parts[1], blob[:4]))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), blob[4:]):
            raise ProofFailed(f"the signature of {parts[1]} does not verify: the note was altered")
        verified += 1
    if not verified:
        raise ProofFailed("the note carries no signature by a known key")
    return text


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str = ""

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def signed(self, key: SigningKey) -> Checkpoint:
        return Checkpoint(self.origin, self.size, self.root, sign_note(self.body(), key))

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise ProofFailed("a checkpoint is origin, size and root hash, one per line")
        origin, size, root = lines[:3]
        if not _SIZE.match(size):
            raise ProofFailed(f"checkpoint size {size[:30]!r} is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise ProofFailed("the checkpoint's root hash is not base64") from None
        if len(digest) != 32:
            raise ProofFailed("the checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size), digest)

    @classmethod
    def open(cls, note: str, verifiers: list[VerifierKey]) -> Checkpoint:
        """A checkpoint from its signed note, its signature checked against ``verifiers``."""
        body = cls.parse_body(open_note(note, verifiers))
        return cls(body.origin, body.size, body.root, note)


# ---- export ---------------------------------------------------------------------------------


class CheckpointSink(Protocol):
    """Where exported checkpoints go: ``put`` stores ``data`` under ``name``, atomically."""

    def put(self, name: str, data: bytes) -> None: ...


class DirectorySink:
    """Checkpoints as files in a directory (write to a temporary file, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{name}.tmp"
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.directory / name)


def export_checkpoint(checkpoint: Checkpoint, sink: CheckpointSink) -> list[str]:
    """Write ``<size>.checkpoint`` (zero-padded, so names sort by size) and
    ``latest.checkpoint``; returns the names written."""
    data = checkpoint.note.encode()
    names = [f"{checkpoint.size:020d}.checkpoint", "latest.checkpoint"]
    for name in names:
        sink.put(name, data)
    return names
