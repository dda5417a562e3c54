"""RFC 9162 Merkle tree hashing and proofs: the transparency log's verifier, dependency-free.

Hashing (RFC 9162 §2.1.1): the empty tree is SHA-256 of nothing, a leaf is
`SHA-256(0x00 || data)`, an interior node is `SHA-256(0x01 || left || right)`; a tree of n
leaves splits at k, the largest power of two strictly below n.

Proofs are generated with the RFC's PATH and SUBPROOF definitions (§2.1.3.1, §2.1.4.1) over the
list of leaf hashes, and verified with its iterative algorithms (§2.1.3.2, §2.1.4.2), so a
verifier needs nothing but `hashlib`. Checked against the vectors of transparency-dev/merkle
(tests/crypto/test_merkle.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from crypto.errors import PollenError

__all__ = [
    "EMPTY_ROOT",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(PollenError):
    """A Merkle proof does not hold: the log is not what the tree head committed to."""

    code = "proof-invalid"
    title = "Merkle proof does not verify"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n ≥ 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (§2.1.1)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1): the audit path of leaf `index` in the tree of `leaves`."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ProofError(f"leaf {index} is not in a tree of {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), tree_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), tree_root(leaves[:k])]


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (§2.1.4.1): proves the tree of `size1` leaves is a prefix of `leaves`."""
    n = len(leaves)
    if not 0 <= size1 <= n:
        raise ProofError(f"no tree of size {size1} inside one of {n}")
    if size1 == 0 or size1 == n:
        return []
    return _subproof(size1, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [tree_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), tree_root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), tree_root(leaves[:k])]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (§2.1.3.2); raises ProofError if malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    if len(leaf) != 32 or any(len(p) != 32 for p in proof):
        raise ProofError("hashes must be 32 bytes")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `leaf` is leaf `index` of the tree of `size` with `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with that root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the tree (size1, root1) is a prefix of (size2, root2) (§2.1.4.2)."""
    if size1 < 0 or size2 < size1:
        raise ProofError(f"a tree of size {size2} cannot extend one of size {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty proof")
        if root1 != root2:
            raise ProofError(f"two different trees of size {size1}: the log forked")
        return
    if size1 == 0:
        if proof:
            raise ProofError("an empty tree needs an empty proof")
        return
    if not proof or any(len(p) != 32 for p in proof):
        raise ProofError("consistency proof is empty or malformed")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: the old root is a node itself
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"the log no longer holds the tree of size {size1} a client saw")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the tree of size {size2}")
