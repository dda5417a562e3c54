"""The in-memory tree (`market.translog.tree.Levels`) serves exactly the roots and proofs
`crypto.merkle` computes from the full leaf list (itself checked against RFC 9162 vectors),
for every pair of sizes; the server's heads and proofs stay those of its stored leaves."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from crypto import BuyerKeys
from crypto.merkle import consistency_proof, inclusion_proof, leaf_hash, tree_root
from market.translog.log import forget, leaf_hashes
from market.translog.tree import Levels
from tests.utils.clock import FakeClock
from tests.utils.scenario import running_job

N = 70


def test_levels_match_the_reference_for_every_size() -> None:
    leaves = [leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(N)]
    levels = Levels()
    assert levels.root(0) == tree_root([])
    for n in range(1, N + 1):
        levels.append(leaves[n - 1])
        for size in range(n + 1):
            prefix = leaves[:size]
            assert levels.root(size) == tree_root(prefix)
            for m in range(size):
                assert levels.inclusion(m, size) == inclusion_proof(m, prefix), (m, size)
            for m in range(size + 1):
                assert levels.consistency(m, size) == consistency_proof(m, prefix), (m, size)


def test_served_heads_and_proofs_are_those_of_the_stored_leaves(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Heads and proofs from the cached tree, while leaves are appended and after the
    cache is dropped (a restart), equal the reference over the stored leaf hashes."""
    from sqlmodel import Session

    scn = running_job(client, clock, buyer_keys)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    seen = []
    for step, p in enumerate([None, *scn.providers]):
        if p is not None:
            assert scn.submit(p, 1).status_code == 201
        if step == 2:
            forget(engine)
        with Session(engine) as s:
            stored = leaf_hashes(s)
        head = client.get("/v1/log/head").json()["body"]
        assert head["size"] == len(stored)
        assert head["root"] == tree_root(stored).hex()
        for m in range(0, len(stored), 3):
            r = client.get("/v1/log/inclusion", params={"index": m, "size": len(stored)})
            assert r.json()["proof"] == [h.hex() for h in inclusion_proof(m, stored)]
        for first in seen:
            r = client.get("/v1/log/consistency", params={"first": first, "second": len(stored)})
            want = consistency_proof(first, stored)
            assert r.json()["proof"] == [h.hex() for h in want]
        seen.append(len(stored))
