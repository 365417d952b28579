"""Dashboard passwords: argon2id (RFC 9106) at login only, never per request.

A password is checked once, at ``POST /login``; the session that follows is a signed cookie
(``fmforge.access.sessions``), checked with one HMAC. What is recorded (``PasswordSet`` on
``access/passwords``) is the PHC string of an argon2id hash (``$argon2id$v=19$m=...,t=...,
p=...$SALT$HASH``, a 16-byte random salt), never the password. The parameters are RFC 9106's
second recommended option (64 MiB, 3 passes, 4 lanes); a stored hash carries its own, so
they can be raised later without invalidating older hashes.

argon2id comes from ``cryptography`` (a dependency already), not argon2-cffi.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from fmforge.errors import InvalidPolicy

MIN_CHARS = 8
MAX_BYTES = 1024  # argon2 takes any length; a longer "password" is a denial-of-service probe
MEMORY_KIB, PASSES, LANES, LENGTH, SALT_BYTES = 64 * 1024, 3, 4, 32, 16


def check_password(password: str) -> bytes:
    """The password's UTF-8 bytes, after its length checks (``InvalidPolicy`` naming them)."""
    encoded = password.encode("utf-8", "surrogatepass")
    if len(password) < MIN_CHARS:
        raise InvalidPolicy(f"a password has at least {MIN_CHARS} characters")
    if len(encoded) > MAX_BYTES:
        raise InvalidPolicy(f"a password has at most {MAX_BYTES} bytes")
    return encoded


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password`` (checked by ``check_password`` first)."""
    kdf = Argon2id(
        salt=os.urandom(SALT_BYTES), length=LENGTH, iterations=PASSES, lanes=LANES,
        memory_cost=MEMORY_KIB,
    )  # fmt: skip
    return kdf.derive_phc_encoded(check_password(password))


def verify_password(password: str, phc: str) -> bool:
    """Whether ``password`` is the one ``phc`` was made from (constant time in the hash)."""
    encoded = password.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_BYTES:
        return False
    try:
        Argon2id.verify_phc_encoded(encoded, phc)
    except (InvalidKey, ValueError):
        return False
    return True


_DUMMY: list[str] = []


def dummy_hash() -> str:
    """A hash no password matches, verified for unknown users so that a login takes as long
    whether the user exists or not."""
    if not _DUMMY:
        _DUMMY.append(hash_password(os.urandom(24).hex()))
    return _DUMMY[0]
