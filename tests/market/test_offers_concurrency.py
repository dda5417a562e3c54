"""Offers accepted at the same instant: the job starts once and every provider is in round 1."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.scenario import open_job


def test_concurrent_accepts_start_the_job_once(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Eight providers accepting at once all get 200, one round 1 expects all of them."""
    scn = open_job(
        client, clock, buyer_keys, providers=8, min_providers=3, max_providers=8, quorum=2
    )
    offers = {p.id: scn.offers(p)[0]["id"] for p in scn.providers}

    def accept(i: int) -> int:
        p = scn.providers[i]
        r = client.post(f"/v1/offers/{offers[p.id]}/accept", headers=p.headers)
        return r.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(accept, range(8)))

    assert codes == [200] * 8
    job = scn.job()
    assert job["state"] == "running"
    rnd = scn.round(1)
    assert sorted(rnd["expected_providers"]) == sorted(p.id for p in scn.providers)


def test_same_offer_accepted_twice_at_once(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Two simultaneous accepts of one offer: one succeeds, the other is a 409, no 500."""
    scn = open_job(client, clock, buyer_keys, providers=3, accept=2)
    p = scn.providers[2]
    (offer,) = scn.offers(p)

    def accept(_: int) -> int:
        return client.post(f"/v1/offers/{offer['id']}/accept", headers=p.headers).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = sorted(pool.map(accept, range(4)))
    assert codes[0] == 200 and all(c == 409 for c in codes[1:]), codes
    assert scn.round(1)["expected_providers"].count(p.id) == 1
