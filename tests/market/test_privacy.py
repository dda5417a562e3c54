"""Providers report the ε they spent on a job; the buyer sees every figure, a provider its own."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.scenario import open_job


def test_buyer_sees_the_epsilon_each_provider_reports(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """After submitting, a provider's ε report shows in the buyer's view; a later round
    replaces it, an older one does not, and another provider sees only itself."""
    scn = open_job(client, clock, buyer_keys, providers=3, accept=3)
    first, second = scn.providers[0], scn.providers[1]
    url = f"/v1/jobs/{scn.job_id}/privacy"
    refused = client.post(
        url, json={"round": 1, "epsilon": 1.5, "delta": 1e-5}, headers=first.headers
    )
    assert refused.status_code == 422  # nothing submitted in round 1 yet
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert scn.submit(first, 1).status_code == 201
    ok = client.post(url, json={"round": 1, "epsilon": 1.5, "delta": 1e-5}, headers=first.headers)
    assert ok.status_code == 200, ok.text
    bad = client.post(
        url,
        content=b'{"round": 1, "epsilon": 1e999, "delta": 1e-5}',
        headers={**first.headers, "content-type": "application/json"},
    )
    assert bad.status_code == 422
    seen = client.get(url, headers=scn.buyer.headers).json()
    assert [(r["provider_id"], r["round"], r["epsilon"]) for r in seen] == [(first.id, 1, 1.5)]
    assert set(seen[0]) == {"job_id", "provider_id", "round", "epsilon", "delta", "reported_at"}
    assert client.get(url, headers=second.headers).json() == []


def test_job_page_shows_the_epsilon_spent(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The dashboard's job page lists each provider's reported ε for the buyer; another
    provider's page shows only its own figure."""
    from tests.market.test_ui import sign_in

    scn = open_job(client, clock, buyer_keys, providers=3, accept=3)
    first, second = scn.providers[0], scn.providers[1]
    assert scn.submit(first, 1).status_code == 201
    body = {"round": 1, "epsilon": 2.75, "delta": 1e-5}
    r = client.post(f"/v1/jobs/{scn.job_id}/privacy", json=body, headers=first.headers)
    assert r.status_code == 200, r.text
    sign_in(client, scn.buyer)
    html = client.get(f"/ui/jobs/{scn.job_id}").text
    assert "Privacy spent" in html and "2.75" in html
    sign_in(client, second)
    # It reported nothing, and sees nobody else's figure: no privacy section at all.
    assert "Privacy spent" not in client.get(f"/ui/jobs/{scn.job_id}").text
