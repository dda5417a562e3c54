"""A job its buyer signed takes only signed envelopes: a provider that registered no
identity key cannot slip an unsigned update into it (the acceptance record would name no
provider signature, and nothing would prove the update was the provider's own)."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from agents.buyer import post_job
from agents.client import PollenClient
from crypto import BuyerKeys, EnvelopeBinding, encrypt_update
from crypto.identity import IdentityKey
from tests.utils.factories import admin, job_body, listing_body, register
from tests.utils.snapshot import snapshot


def test_a_signed_job_refuses_an_unsigned_envelope(
    client: TestClient, buyer_keys: BuyerKeys
) -> None:
    operator = admin(client)
    providers = [register(client, "provider", f"p{i}") for i in range(2)]
    for p in providers:
        r = client.post("/v1/listings", json=listing_body(), headers=p.headers)
        assert r.status_code == 201, r.text
    buyer = register(client, "buyer")
    api = PollenClient("http://testserver", buyer.api_key, http=client)
    spec = job_body(rounds=1, max_providers=2, min_providers=2)
    job = post_job(api, buyer_keys, spec, identity=IdentityKey.generate())
    r = client.post(
        f"/v1/admin/jobs/{job.id}/credit",
        json={"amount_cents": spec["budget_cents"]},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    for p in providers:
        (offer,) = client.get("/v1/offers", headers=p.headers).json()
        assert client.post(f"/v1/offers/{offer['id']}/accept", headers=p.headers).status_code == 200
    job = api.get_job(job.id)
    assert job.state == "running"
    sender = providers[0]
    binding = EnvelopeBinding(job.id, 1, sender.id, int(job.param_count), 2)
    envelope = encrypt_update(
        buyer_keys.public_context(), np.full(int(job.param_count), 0.1, dtype=np.float32),
        binding=binding, weight=1.0, samples=100,
    )  # fmt: skip
    before = snapshot(client)
    r = client.put(
        f"/v1/jobs/{job.id}/rounds/1/submission", content=envelope, headers=sender.headers
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "not signed" in r.json()["detail"]
    assert snapshot(client) == before
