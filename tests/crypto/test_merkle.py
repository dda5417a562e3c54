"""RFC 9162 hashing and proofs against the published test vectors (transparency-dev/merkle,
`testonly/constants.go` and `proof/verify_test.go`, the vectors Certificate Transparency's Go
implementations are tested with)."""

from __future__ import annotations

import pytest

from crypto.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf number counted from 1, tree size, proof), as in verify_test.go.
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (3, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        2,
        5,
        _h(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]
LEAVES = [leaf_hash(d) for d in INPUTS]


def test_roots_of_every_prefix() -> None:
    """MTH of the first n inputs equals the published root for every n from 0 to 8."""
    assert tree_root([]) == EMPTY_ROOT
    for n in range(9):
        assert tree_root(LEAVES[:n]) == ROOTS[n]


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_vectors(leaf: int, size: int, proof: list[bytes]) -> None:
    """PATH generates the published audit path, and the RFC's verifier accepts it."""
    assert inclusion_proof(leaf - 1, LEAVES[:size]) == proof
    verify_inclusion(leaf - 1, size, LEAVES[leaf - 1], proof, ROOTS[size])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_vectors(size1: int, size2: int, proof: list[bytes]) -> None:
    """PROOF generates the published consistency proof, and the verifier accepts it."""
    assert consistency_proof(size1, LEAVES[:size2]) == proof
    verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], proof)


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION[1:])
def test_corrupted_inclusion_refused(leaf: int, size: int, proof: list[bytes]) -> None:
    """Every corruption verify_test.go tries (index, size, leaf, root, path) is refused."""
    i, root, lh = leaf - 1, ROOTS[size], LEAVES[leaf - 1]
    probes = [
        (i - 1, size, lh, proof, root),
        (i + 1, size, lh, proof, root),
        (i ^ 2, size, lh, proof, root),
        (i, size * 2, lh, proof, root),
        (i, size // 2, lh, proof, root),
        (i, size, leaf_hash(b"WrongLeaf"), proof, root),
        (i, size, lh, proof, EMPTY_ROOT),
        (i, size, lh, [*proof, root], root),
        (i, size, lh, [root, *proof], root),
        (i, size, lh, proof[:-1], root),
    ]
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 8]) + bad[k][1:]
        probes.append((i, size, lh, bad, root))
    for index, sz, h, p, r in probes:
        if index < 0:
            continue
        with pytest.raises(ProofError):
            verify_inclusion(index, sz, h, p, r)


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY[1:])
def test_corrupted_consistency_refused(size1: int, size2: int, proof: list[bytes]) -> None:
    """Wrong sizes, wrong or swapped roots, truncated, padded or bit-flipped proofs fail."""
    r1, r2 = ROOTS[size1], ROOTS[size2]
    probes = [
        (size1 - 1, size2, r1, r2, proof),
        (size1 + 1, size2, r1, r2, proof),
        (size1 ^ 2, size2, r1, r2, proof),
        (size1, size2 * 2, r1, r2, proof),
        (size1, size2 // 2, r1, r2, proof),
        (size1, size2, leaf_hash(b"WrongRoot"), r2, proof),
        (size1, size2, r1, leaf_hash(b"WrongRoot"), proof),
        (size1, size2, r2, r1, proof),
        (size1, size2, r1, r2, []),
        (size1, size2, r1, r2, [*proof, r1]),
        (size1, size2, r1, r2, [*proof, r2]),
        (size1, size2, r1, r2, [r1, *proof]),
        (size1, size2, r1, r2, [r2, *proof]),
        (size1, size2, r1, r2, [proof[0], *proof]),
        (size1, size2, r1, r2, proof[:-1]),
    ]
    for k in range(len(proof)):
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 16]) + bad[k][1:]
        probes.append((size1, size2, r1, r2, bad))
    for s1, s2, a, b, p in probes:
        if s1 < 1 or s2 < s1 or (s1 == s2 and a == b and not p):
            continue
        with pytest.raises(ProofError):
            verify_consistency(s1, s2, a, b, p)


def test_every_proof_of_a_larger_tree_verifies() -> None:
    """Generated proofs for all sizes up to 40 verify (inclusion of each leaf, every pair)."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
    roots = [tree_root(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            verify_inclusion(i, n, leaves[i], inclusion_proof(i, leaves[:n]), roots[n])
        for m in range(n + 1):
            verify_consistency(m, n, roots[m], roots[n], consistency_proof(m, leaves[:n]))
