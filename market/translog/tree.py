"""The log's Merkle tree kept in memory: every complete aligned subtree's hash, by level.

`levels[h][i]` is the hash of leaves [i·2^h, (i+1)·2^h): the perfect subtrees RFC 9162's
recursion splits every tree into (the left part of each split is one of them). Appending a
leaf adds at most one node per level, so the tree grows in O(log n) hashes; any subtree
hash MTH(D[a:b]) the RFC's PATH and SUBPROOF need is then O(log n) cached nodes, and a
root, an audit path or a consistency proof costs O(log² n) hashes and no database read.
The proofs are the very lists `crypto.merkle` computes from the full leaf list
(tests/market/test_log_tree.py checks them against it for every pair of sizes).
"""

from __future__ import annotations

from crypto.merkle import EMPTY_ROOT, ProofError, node_hash


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Levels:
    """The complete subtrees of an append-only list of leaf hashes."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        h = 0
        while len(self.levels[h]) % 2 == 0:
            parent = node_hash(self.levels[h][-2], self.levels[h][-1])
            if h + 1 == len(self.levels):
                self.levels.append([])
            self.levels[h + 1].append(parent)
            h += 1

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC's recursion reaches (start aligned to the
        largest power of two not above end − start)."""
        n = end - start
        if n <= 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self.levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int) -> bytes:
        self._check(size)
        return self.subtree(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 §2.1.3.1)."""
        self._check(size)
        if not 0 <= index < size:
            raise ProofError(f"leaf {index} is not in a tree of {size}")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self.subtree(start + k, end))
                end = start + k
            else:
                path.append(self.subtree(start, start + k))
                start, m = start + k, m - k
        return path[::-1]

    def consistency(self, first: int, size: int) -> list[bytes]:
        """PROOF(first, D[size]) (RFC 9162 §2.1.4.1)."""
        self._check(size)
        if not 0 <= first <= size:
            raise ProofError(f"no tree of size {first} inside one of {size}")
        if first in (0, size):
            return []
        proof: list[bytes] = []
        start, end, m, whole = 0, size, first, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self.subtree(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree(start, start + k))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self.subtree(start, end))
        return proof[::-1]

    def _check(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError(f"the tree holds {self.size} leaves, not {size}")
