"""Erasure by crypto-shredding: each data subject's personal data is encrypted under a key of
their own, so destroying that key erases the data everywhere it was copied, the immutable
ledger included.

- The **repository key** (32 random bytes) lives outside the object store: the file named by
  setting ``access.key_file``, by default ``.fmforge/keys/repository.key``, mode 0600 (a file
  others may read is refused). It wraps the subject keys and derives pseudonyms; it is never
  recorded anywhere.
- A **subject key** (AES-256-GCM, 32 random bytes) is stored wrapped by the repository key in
  ``.fmforge/keys/subjects.db`` (SQLite with ``secure_delete``, rollback journal, no WAL), under
  ``key_id = subject:<pseudonym>``; the pseudonym is an HMAC of the subject's id under a key
  derived from the repository key, so events name subjects without naming them.
- **Cells** are stored as ``fmfenc1:<pseudonym>:<base64(nonce || ciphertext)>``, with the
  cell's address (``dataset|column|...``, chosen by the caller) as associated data, so a
  ciphertext cannot be moved to another cell.
- **Event payloads** are sealed whole: ``{"sealed": base64(nonce || ciphertext)}`` with
  ``key_id`` set on the event and ``stream\\0event_id`` as associated data. The ledger's chain
  hashes the ciphertext (an event's hash covers its payload's hash), so it verifies before
  and after the key is destroyed.
  Only the payload is sealed: stream names, event types, ``meta`` and ``refs`` stay in clear,
  so they must never hold personal data (name a subject's stream by its key id).
- **Destroying** a subject's key deletes its row (overwritten with zeros by
  ``secure_delete``), records a tombstone and ``VACUUM``s the table: nothing left can decrypt
  the subject's ciphertexts, which then read as ``SubjectErased``.

Backups of ``subjects.db`` undo erasure when restored: keep them short-lived. Encrypted
personal data is still personal data in the GDPR's reading; shredding makes it unreadable,
which is what erasure from an append-only log can mean.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fmforge.access.checkpoints import read_secret, write_secret
from fmforge.errors import ConfigError, InvalidEvent, ProofFailed, SubjectErased
from fmforge.ledger import Event, NewEvent

KEY_BYTES = 32
NONCE_BYTES = 12
CELL_PREFIX = "fmfenc1:"


class RepositoryKey:
    """The key that wraps subject keys and derives pseudonyms (see the module docstring)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"a repository key is {KEY_BYTES} bytes, not {len(secret)}")
        self._wrap = AESGCM(hmac.new(secret, b"fmforge/wrap", hashlib.sha256).digest())
        self._pseudonym_key = hmac.new(secret, b"fmforge/pseudonym", hashlib.sha256).digest()

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> RepositoryKey:
        """The key in ``path``; with ``create``, a new one is made (mode 0600) if missing."""
        if create and not path.exists():
            write_secret(path, secrets.token_bytes(KEY_BYTES))
        return cls(read_secret(path, "repository key"))

    def pseudonym(self, subject: str) -> str:
        """A stable stand-in for ``subject`` (hex HMAC-SHA-256): the same subject, the same
        pseudonym; the id cannot be read back from it without the repository key."""
        return hmac.new(self._pseudonym_key, subject.encode(), hashlib.sha256).hexdigest()

    def wrap(self, key: bytes, key_id: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._wrap.encrypt(nonce, key, key_id.encode())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        try:
            return self._wrap.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise ConfigError(
                f"the subject key {key_id} does not unwrap with this repository key "
                "(a different access.key_file?)"
            ) from None


def key_id_of(pseudonym: str) -> str:
    return f"subject:{pseudonym[:32]}"


class SubjectKeys:
    """Per-subject keys, wrapped, in a SQLite table outside the object store."""

    def __init__(self, path: Path, repository_key: RepositoryKey) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.master = repository_key
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        path.chmod(0o600)
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS subject_keys "
            "(key_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS destroyed_keys (key_id TEXT PRIMARY KEY, at REAL NOT NULL)"
        )
        self._keys: dict[str, AESGCM] = {}
        self.lock = threading.RLock()  # one connection, shared by a server's threads

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SubjectKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key_id(self, subject: str) -> str:
        return key_id_of(self.master.pseudonym(subject))

    def create(self, subject: str) -> tuple[str, bool]:
        """The subject's key id, creating the key if it has none: (key_id, created). A
        subject whose key was destroyed gets no new one under the same id (their old
        ciphertexts stay unreadable): ``SubjectErased``."""
        ids, created = self.create_many([subject])
        return ids[subject], bool(created)

    def create_many(self, subjects: list[str]) -> tuple[dict[str, str], list[str]]:
        """Keys for many subjects in one transaction: (subject -> key id, the key ids created
        now). A subject whose key was destroyed raises ``SubjectErased``, nothing created."""
        ids = {subject: self.key_id(subject) for subject in subjects}
        wanted = sorted(set(ids.values()))
        with self.lock:
            gone = self.destroyed(wanted)
            if gone:
                raise SubjectErased(sorted(gone)[0])
            created: list[str] = []
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for key_id in wanted:
                    wrapped = self.master.wrap(secrets.token_bytes(KEY_BYTES), key_id)
                    cursor = self.db.execute(
                        "INSERT OR IGNORE INTO subject_keys VALUES (?, ?)", (key_id, wrapped)
                    )
                    if cursor.rowcount == 1:
                        created.append(key_id)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return ids, created

    def destroyed(self, key_ids: list[str] | None = None) -> set[str]:
        """The key ids among ``key_ids`` (default: all) whose keys were destroyed (by this
        process or another); copies this process holds of them are dropped."""
        with self.lock:
            if key_ids is None:
                out = {r[0] for r in self.db.execute("SELECT key_id FROM destroyed_keys")}
            else:
                out = set()
                for start in range(0, len(key_ids), 500):
                    part = key_ids[start : start + 500]
                    marks = ",".join("?" * len(part))
                    out.update(
                        r[0]
                        for r in self.db.execute(
                            f"SELECT key_id FROM destroyed_keys WHERE key_id IN ({marks})", part
                        )
                    )
            for key_id in out:
                self._keys.pop(key_id, None)
        return out

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._keys.get(key_id)
        if cipher is None:
            with self.lock:
                row = self.db.execute(
                    "SELECT wrapped FROM subject_keys WHERE key_id = ?", (key_id,)
                ).fetchone()
            if row is None:
                raise SubjectErased(key_id)
            cipher = self._keys[key_id] = AESGCM(self.master.unwrap(bytes(row[0]), key_id))
        return cipher

    def destroy(self, key_id: str) -> bool:
        """Destroy a subject's key (and every copy this process holds); True if it existed."""
        import time

        with self.lock:
            self._keys.pop(key_id, None)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                gone = self.db.execute(
                    "DELETE FROM subject_keys WHERE key_id = ?", (key_id,)
                ).rowcount
                self.db.execute(
                    "INSERT OR IGNORE INTO destroyed_keys VALUES (?, ?)", (key_id, time.time())
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            self.db.execute("VACUUM")
        return gone == 1

    # ---- bytes, cells and event payloads --------------------------------------------------

    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._cipher(key_id).encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        cipher = self._cipher(key_id)
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise ProofFailed(
                f"a ciphertext under {key_id} does not decrypt: altered, or moved from another "
                "cell or event"
            ) from None

    def encrypt_cell(self, key_id: str, value: str, address: str) -> str:
        """``value`` as a stored cell of the subject ``key_id``; ``address`` (the cell's
        dataset, column and row, as the caller names them) binds it to its place."""
        blob = self.encrypt(key_id, value.encode(), address.encode())
        return f"{CELL_PREFIX}{key_id.removeprefix('subject:')}:{base64.b64encode(blob).decode()}"

    def decrypt_cell(self, cell: str, address: str) -> str:
        if not cell.startswith(CELL_PREFIX):
            raise ConfigError("not an encrypted cell")
        ident, _, encoded = cell[len(CELL_PREFIX) :].partition(":")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ConfigError("an encrypted cell that is not base64") from None
        return self.decrypt(f"subject:{ident}", blob, address.encode()).decode()

    def seal_event(self, event: NewEvent, stream: str, key_id: str) -> NewEvent:
        """``event`` with its payload encrypted under ``key_id`` (set on the event)."""
        if event.key_id is not None:
            raise InvalidEvent(f"{event.type}: the payload is sealed already ({event.key_id})")
        plaintext = orjson.dumps(dict(event.data), option=orjson.OPT_SORT_KEYS)
        blob = self.encrypt(key_id, plaintext, _event_aad(stream, event.event_id))
        return NewEvent(
            event.type,
            {"sealed": base64.b64encode(blob).decode()},
            schema_version=event.schema_version,
            event_id=event.event_id,
            refs=event.refs,
            meta=event.meta,
            key_id=key_id,
        )

    def open_event(self, event: Event) -> dict[str, Any]:
        """The plaintext payload of a sealed event; ``SubjectErased`` once its key is gone."""
        if event.key_id is None:
            return dict(event.data)
        sealed = event.data.get("sealed") if isinstance(event.data, Mapping) else None
        if not isinstance(sealed, str):
            raise ConfigError(f"event seq {event.seq} names key {event.key_id} but is not sealed")
        blob = base64.b64decode(sealed)
        plain = self.decrypt(event.key_id, blob, _event_aad(event.stream, event.event_id))
        data: dict[str, Any] = orjson.loads(plain)
        return data


def _event_aad(stream: str, event_id: str) -> bytes:
    return b"fmforge-event\x00" + stream.encode() + b"\x00" + event_id.encode()
