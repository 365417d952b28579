"""Verify an fmforge inclusion proof with no fmforge installed (RFC 9162 Merkle proofs, a C2SP
signed note with an Ed25519 key): ``python verify_proof.py PROOF.json VERIFIER_KEY``, where
PROOF.json is what ``fmforge audit prove --seq N`` prints and VERIFIER_KEY the file holding
``fmforge audit key``'s line. Needs only the ``cryptography`` package. The
functions are those of fmforge's own tests (``tests/unit/access/standalone_verifier.py``)."""

import base64
import json
import sys
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _fold(fn: int, sn: int, seed: bytes, path: list[bytes]) -> tuple[bytes, bytes] | None:
    fr = sr = seed
    for c in path:
        if sn == 0 or len(c) != 32:
            return None
        if fn & 1 or fn == sn:
            fr, sr = sha256(b"\1" + c + fr).digest(), sha256(b"\1" + c + sr).digest()
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha256(b"\1" + sr + c).digest()
        fn, sn = fn >> 1, sn >> 1
    return (fr, sr) if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    return 0 <= index < size and (_fold(index, size - 1, leaf, path) or (b"", b""))[1] == root


def verify_consistency(m: int, n: int, r1: bytes, r2: bytes, path: list[bytes]) -> bool:
    if m == n or m == 0:
        return not path and (r1 == r2 or m != n)
    path = [r1, *path] if m & (m - 1) == 0 else list(path)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return 0 < m < n and len(path) > 0 and _fold(fn, sn, path[0], path[1:]) == (r1, r2)


def verify_checkpoint(note: str, verifier: str) -> tuple[str, int, bytes]:
    name, key_id, key = verifier.strip().split("+", 2)
    raw = base64.b64decode(key)
    if raw[0] != 1 or sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != key_id:
        raise ValueError("not an Ed25519 verifier key")
    text, lines = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2 :].splitlines()
    for dash, who, signature in (line.split(" ") for line in lines):
        blob = base64.b64decode(signature)
        if dash == "\u2014" and who == name and blob[:4].hex() == key_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
            origin, size, root = text.split("\n")[:3]
            return origin, int(size), base64.b64decode(root)
    raise ValueError(f"no signature by {name}")


def main(proof_file: str, key_file: str) -> int:
    with open(proof_file, encoding="utf-8") as f:
        proof = json.load(f)
    with open(key_file, encoding="utf-8") as f:
        verifier = f.read()
    origin, size, root = verify_checkpoint(proof["checkpoint"], verifier)
    leaf = sha256(b"\0" + bytes.fromhex(proof["event_hash"])).digest()
    path = [base64.b64decode(p) for p in proof["proof"]]
    if not verify_inclusion(proof["leaf_index"], size, leaf, path, root):
        print(f"FAILED: the event is not in {origin}'s signed log of size {size}")
        return 1
    print(f"ok: event {proof['leaf_index'] + 1} is in {origin}'s signed log of size {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
