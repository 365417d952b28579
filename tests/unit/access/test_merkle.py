"""The Merkle tree against the RFC 6962 test vectors, a naive recursive definition, and an
independent verifier; and the proof verifiers against every corruption transparency-dev's own
tests apply (a verifier that accepts a bad proof is a security bug: GHSA-672p-m5jq-mrh8)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from fmforge.access.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from fmforge.errors import ProofFailed
from tests.unit.access import rfc6962_vectors as V
from tests.unit.access import standalone_verifier as S

LEAVES = [bytes.fromhex(x) for x in V.LEAVES]
ROOTS = [bytes.fromhex(x) for x in V.ROOTS]


def _tree(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(leaves)
    return tree


def _naive_root(leaves: list[bytes]) -> bytes:
    """MTH as RFC 6962 §2.1 defines it, recursively over the data."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _naive_root(leaves[:k]) + _naive_root(leaves[k:])).digest()


class TestVectors:
    def test_the_hasher_vectors(self) -> None:
        assert EMPTY_ROOT.hex() == V.EMPTY_ROOT
        assert leaf_hash(b"").hex() == V.EMPTY_LEAF
        assert leaf_hash(b"L123456").hex() == V.LEAF_L123456
        assert node_hash(b"N123", b"N456").hex() == V.NODE_N123_N456
        assert MerkleTree().root() == EMPTY_ROOT

    def test_roots_at_every_size(self) -> None:
        tree = _tree(LEAVES)
        assert [tree.root(size) for size in range(1, 9)] == ROOTS

    @pytest.mark.parametrize(("leaf", "size", "proof"), V.INCLUSION)
    def test_inclusion_proofs(self, leaf: int, size: int, proof: list[str]) -> None:
        expected = [bytes.fromhex(p) for p in proof]
        assert _tree(LEAVES).inclusion_proof(leaf - 1, size) == expected
        hashed = leaf_hash(LEAVES[leaf - 1])
        verify_inclusion(leaf - 1, size, hashed, expected, ROOTS[size - 1])
        assert S.verify_inclusion(leaf - 1, size, hashed, expected, ROOTS[size - 1])

    @pytest.mark.parametrize(("old", "new", "proof"), V.CONSISTENCY)
    def test_consistency_proofs(self, old: int, new: int, proof: list[str]) -> None:
        expected = [bytes.fromhex(p) for p in proof]
        assert _tree(LEAVES).consistency_proof(old, new) == expected
        verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], expected)
        assert S.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], expected)


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    """transparency-dev/merkle's corruptInclusionProof, as (description, arguments)."""
    some = bytes.fromhex(V.SOME_HASH)
    probes = [
        ("index - 1", (index - 1, size, leaf, proof, root)),
        ("index + 1", (index + 1, size, leaf, proof, root)),
        ("index ^ 2", (index ^ 2, size, leaf, proof, root)),
        ("size * 2", (index, size * 2, leaf, proof, root)),
        ("size / 2", (index, size // 2, leaf, proof, root)),
        ("wrong leaf", (index, size, b"WrongLeaf", proof, root)),
        ("empty root", (index, size, leaf, proof, EMPTY_ROOT)),
        ("random root", (index, size, leaf, proof, some)),
        ("trailing garbage", (index, size, leaf, [*proof, b""], root)),
        ("trailing root", (index, size, leaf, [*proof, root], root)),
        ("preceding garbage", (index, size, leaf, [b"", *proof], root)),
        ("preceding root", (index, size, leaf, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((f"proof[{i}] bit 3", (index, size, leaf, bad, root)))
    if proof:
        probes.append(("removed component", (index, size, leaf, proof[:-1], root)))
    if len(proof) > 1:
        probes.append(
            ("inserted component", (index, size, leaf, [proof[0], some, *proof[1:]], root))
        )
    return probes


def _consistency_probes(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """transparency-dev/merkle's corruptConsistencyProof."""
    probes = [
        ("old - 1", (old - 1, new, r1, r2, proof)),
        ("old + 1", (old + 1, new, r1, r2, proof)),
        ("old ^ 2", (old ^ 2, new, r1, r2, proof)),
        ("new * 2", (old, new * 2, r1, r2, proof)),
        ("new / 2", (old, new // 2, r1, r2, proof)),
        ("wrong root1", (old, new, b"WrongRoot", r2, proof)),
        ("wrong root2", (old, new, r1, b"WrongRoot", proof)),
        ("swapped roots", (old, new, r2, r1, proof)),
        ("empty proof", (old, new, r1, r2, [])),
        ("trailing garbage", (old, new, r1, r2, [*proof, b""])),
        ("trailing root1", (old, new, r1, r2, [*proof, r1])),
        ("trailing root2", (old, new, r1, r2, [*proof, r2])),
        ("preceding garbage", (old, new, r1, r2, [b"", *proof])),
        ("preceding root1", (old, new, r1, r2, [r1, *proof])),
        ("preceding root2", (old, new, r1, r2, [r2, *proof])),
        ("preceding proof[0]", (old, new, r1, r2, [proof[0], *proof])),
        ("truncated proof", (old, new, r1, r2, proof[:-1])),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((f"proof[{i}] bit 4", (old, new, r1, r2, bad)))
    return probes


class TestCorruptedProofsFail:
    @pytest.mark.parametrize(("leaf", "size", "proof"), V.INCLUSION)
    def test_inclusion(self, leaf: int, size: int, proof: list[str]) -> None:
        hashes = [bytes.fromhex(p) for p in proof]
        probes = _inclusion_probes(
            leaf - 1, size, hashes, ROOTS[size - 1], leaf_hash(LEAVES[leaf - 1])
        )
        accepted = []
        for description, (index, n, hashed, path, root) in probes:
            with pytest.raises(ProofFailed):
                verify_inclusion(index, n, hashed, path, root)
            if S.verify_inclusion(index, n, hashed, path, root):
                accepted.append(description)
        assert not accepted, f"the standalone verifier accepted: {accepted}"

    @pytest.mark.parametrize(("old", "new", "proof"), [c for c in V.CONSISTENCY if c[2]])
    def test_consistency(self, old: int, new: int, proof: list[str]) -> None:
        hashes = [bytes.fromhex(p) for p in proof]
        accepted = []
        for description, args in _consistency_probes(
            old, new, ROOTS[old - 1], ROOTS[new - 1], hashes
        ):
            with pytest.raises(ProofFailed):
                verify_consistency(*args)
            if S.verify_consistency(*args):
                accepted.append(description)
        assert not accepted, f"the standalone verifier accepted: {accepted}"

    @pytest.mark.parametrize(
        ("old", "new", "r1", "r2", "proof", "ok"),
        [
            (0, 0, b"1" * 32, b"2" * 32, [], False),  # same size, different roots: a fork
            (1, 1, b"1" * 32, b"2" * 32, [], False),
            (0, 0, b"1" * 32, b"1" * 32, [], True),
            (0, 1, b"1" * 32, b"2" * 32, [], True),  # every tree extends the empty one
            (1, 1, b"2" * 32, b"2" * 32, [], True),
            (1, 0, b"1" * 32, b"2" * 32, [], False),  # the log shrank
            (2, 1, b"1" * 32, b"2" * 32, [], False),
            (1, 2, b"1" * 32, b"2" * 32, [], False),  # an empty proof for a real extension
            (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),  # a proof where none is due
            (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
            (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        ],
    )
    def test_edge_cases(
        self, old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes], ok: bool
    ) -> None:
        """transparency-dev/merkle's TestVerifyConsistency table."""
        assert S.verify_consistency(old, new, r1, r2, proof) is ok
        if ok:
            verify_consistency(old, new, r1, r2, proof)
        else:
            with pytest.raises(ProofFailed):
                verify_consistency(old, new, r1, r2, proof)


class TestAgainstTheDefinition:
    def test_random_trees_agree_with_the_recursive_definition(self) -> None:
        rng = random.Random(6962)
        data = [rng.randbytes(rng.randrange(0, 40)) for _ in range(300)]
        tree = _tree(data)
        for size in [*range(1, 70), 127, 128, 129, 255, 256, 257, 300]:
            root = tree.root(size)
            assert root == _naive_root(data[:size]), size
            for index in {0, size - 1, rng.randrange(size)}:
                proof = tree.inclusion_proof(index, size)
                verify_inclusion(index, size, leaf_hash(data[index]), proof, root)
                assert S.verify_inclusion(index, size, leaf_hash(data[index]), proof, root)
            old = rng.randrange(0, size + 1)
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, tree.root(old), root, proof)
            assert S.verify_consistency(old, size, tree.root(old), root, proof)

    def test_a_proof_of_another_tree_fails(self) -> None:
        rng = random.Random(1)
        a = [rng.randbytes(8) for _ in range(50)]
        b = [*a[:20], b"forged", *a[21:]]
        honest, forged = _tree(a), _tree(b)
        with pytest.raises(ProofFailed, match="not the one its root vouches for"):
            verify_consistency(
                30, 50, honest.root(30), forged.root(50), forged.consistency_proof(30, 50)
            )
        assert not S.verify_consistency(
            30, 50, honest.root(30), forged.root(50), forged.consistency_proof(30, 50)
        )

    def test_sizes_outside_the_tree_are_refused(self) -> None:
        tree = _tree(LEAVES)
        with pytest.raises(ValueError, match="8 leaves, not 9"):
            tree.root(9)
        with pytest.raises(ValueError, match="not in a tree of 8"):
            tree.inclusion_proof(8)
        with pytest.raises(ValueError, match="consistent"):
            tree.consistency_proof(9, 8)


class TestPersistence:
    def test_saved_in_pieces_and_loaded_equal(self, tmp_path: Path) -> None:
        rng = random.Random(2)
        data = [rng.randbytes(32) for _ in range(1000)]
        tree = MerkleTree()
        for start in range(0, 1000, 137):
            tree.extend(data[start : start + 137])
            tree.save(tmp_path)
        loaded = MerkleTree.load(tmp_path)
        assert loaded.size == 1000
        assert loaded.levels == tree.levels
        assert loaded.root(777) == _naive_root(data[:777])

    def test_files_that_do_not_fit_give_an_empty_tree(self, tmp_path: Path) -> None:
        _tree(LEAVES).save(tmp_path)
        level1 = tmp_path / "level-01.bin"
        level1.write_bytes(level1.read_bytes()[:-32])
        assert MerkleTree.load(tmp_path).size == 0
        assert MerkleTree.load(tmp_path / "missing").size == 0


def test_the_standalone_verifier_is_short_and_independent() -> None:
    source = Path(S.__file__).read_text()
    assert len(source.splitlines()) <= 50
    assert "fmforge" not in source
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported == {"base64", "hashlib", "cryptography"}
