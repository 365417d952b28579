"""An RFC 6962 Merkle tree over the ledger's event hashes, with inclusion and consistency
proofs (RFC 6962 §2.1, RFC 9162 §2.1).

Leaf ``i`` is event ``seq = i + 1``: ``leaf = SHA-256(0x00 || event hash)``, a node is
``SHA-256(0x01 || left || right)``, the empty tree's root is ``SHA-256()``. The tree keeps, per
level, the hash of every *complete* subtree (level ``k`` holds the subtrees of ``2**k``
leaves), so appending a leaf costs one leaf hash and, amortised, one node hash; the root at any
size, an inclusion proof and a consistency proof cost O(log n) lookups plus O(log n) hashes for
the ragged right edge.

The per-event blake3 chain (``fmforge.ledger``) remains the ledger's own integrity check; the
tree adds what a chain cannot give: a proof that one event is in a signed history without
handing over the history, and a proof that a later history extends an earlier one (a log
rewritten or forked behind a checkpoint fails it).

Verification follows RFC 9162's algorithms and checks every length: a proof with a node too
many or too few fails (immudb's SDK < 1.4.1 accepted a forged consistency proof because part
of it went unchecked: GHSA-672p-m5jq-mrh8).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from fmforge.errors import ProofFailed

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Complete-subtree hashes per level, in flat ``bytearray``s (32 bytes each)."""

    def __init__(self) -> None:
        self.levels: list[bytearray] = [bytearray()]
        self.size = 0

    def append_leaf_hash(self, leaf: bytes) -> None:
        """Append one leaf, given as its leaf hash."""
        levels = self.levels
        levels[0] += leaf
        index = self.size
        self.size += 1
        level = 0
        node = leaf
        while index & 1:  # this node completes a pair: its parent is complete too
            left = bytes(levels[level][(index - 1) * 32 : index * 32])
            node = _sha256(b"\x01" + left + node).digest()
            level += 1
            index >>= 1
            if len(levels) == level:
                levels.append(bytearray())
            levels[level] += node

    def extend(self, entries: Iterable[bytes]) -> None:
        """Append leaves for ``entries`` (the data: event hashes), level by level: every new
        complete node once, with no per-leaf bookkeeping."""
        sha = _sha256
        leaves = b"".join([sha(b"\x00" + entry).digest() for entry in entries])
        if not leaves:
            return
        old, new = self.size, self.size + len(leaves) // 32
        levels = self.levels
        levels[0] += leaves
        level = 0
        while new >> (level + 1) > old >> (level + 1):
            below = memoryview(levels[level])
            first, last = old >> (level + 1), new >> (level + 1)
            parents = b"".join(
                [sha(b"\x01" + below[i * 64 : i * 64 + 64]).digest() for i in range(first, last)]
            )
            level += 1
            if len(levels) == level:
                levels.append(bytearray())
            levels[level] += parents
        self.size = new

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self.levels[level][index * 32 : (index + 1) * 32])

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range within the tree (``start`` aligned as RFC 6962's
        decomposition keeps it)."""
        n = end - start
        if n <= 0:
            raise ValueError("empty range")
        if n & (n - 1) == 0 and start % n == 0:
            level = n.bit_length() - 1
            return self._node(level, start >> level)
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` leaves (default: all), O(log n)."""
        size = self.size if size is None else size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        # Fold the complete subtrees making up [0, size), right to left.
        node: bytes | None = None
        start = size
        for level in range(size.bit_length()):
            if size >> level & 1:
                start -= 1 << level
                piece = self._node(level, start >> level)
                node = piece if node is None else node_hash(piece, node)
        assert node is not None
        return node

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 6962 §2.1.1)."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.subtree(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """PROOF(old, D[0:new]) (RFC 6962 §2.1.2); empty for old == 0 or old == new."""
        new = self.size if new is None else new
        self._check_size(new)
        if not 0 <= old <= new:
            raise ValueError(f"cannot prove size {old} consistent with size {new}")
        if old == 0 or old == new:
            return []
        proof: list[bytes] = []
        start, end, m, whole = 0, new, old, True
        while True:
            n = end - start
            if m == n:
                if not whole:
                    proof.append(self.subtree(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self.subtree(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree(start, start + k))
                start += k
                m -= k
                whole = False
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")

    # ---- persistence (a cache: the ledger is the truth) ---------------------------------

    def save(self, directory: Path) -> None:
        """Append what is new of each level to ``directory/level-KK.bin``."""
        directory.mkdir(parents=True, exist_ok=True)
        for level, data in enumerate(self.levels):
            path = directory / f"level-{level:02d}.bin"
            have = path.stat().st_size if path.exists() else 0
            if have > len(data):
                path.unlink()
                have = 0
            if have < len(data):
                with path.open("ab") as handle:
                    handle.write(data[have:])

    @classmethod
    def load(cls, directory: Path) -> MerkleTree:
        """A tree saved by ``save``; an empty tree when the files are missing or do not fit
        together (the caller then rebuilds from the ledger)."""
        tree = cls()
        levels: list[bytearray] = []
        while (path := directory / f"level-{len(levels):02d}.bin").is_file():
            levels.append(bytearray(path.read_bytes()))
        if not levels:
            return tree
        size = len(levels[0]) // 32
        if any(len(data) != (size >> level) * 32 for level, data in enumerate(levels)):
            return tree
        while len(levels) > 1 and not levels[-1]:
            levels.pop()
        tree.levels, tree.size = levels, size
        return tree


# ---- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` and the leaf hash ``leaf`` at ``index`` imply for ``size``."""
    if not 0 <= index < size:
        raise ProofFailed(f"leaf index {index} is outside a tree of {size}")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ProofFailed("a hash in the inclusion proof is not 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofFailed("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofFailed("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ``ProofFailed`` unless ``proof`` shows the leaf hash ``leaf`` at ``index`` in
    the tree of ``size`` leaves with ``root``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofFailed(f"leaf {index} is not in the tree of size {size} with this root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ``ProofFailed`` unless ``proof`` shows the tree of ``new_size`` leaves with
    ``new_root`` extends the tree of ``old_size`` with ``old_root``."""
    if not 0 <= old_size <= new_size:
        raise ProofFailed(f"size {new_size} cannot extend size {old_size}: the log shrank")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofFailed("a hash in the consistency proof is not 32 bytes")
    if old_size == new_size:
        if proof:
            raise ProofFailed("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofFailed(f"two different roots for the same size {old_size}: a fork")
        return
    if old_size == 0:
        if proof:
            raise ProofFailed("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofFailed("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofFailed("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofFailed("the consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofFailed(f"the history up to size {old_size} is not the one its root vouches for")
    if sr != new_root:
        raise ProofFailed(f"size {new_size} does not extend size {old_size} with this root")
