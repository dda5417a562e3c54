"""Bring a job to a given state through the real API, and act in it as its parties."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from crypto import BuyerKeys, EnvelopeBinding, encrypt_update
from tests.utils.clock import FakeClock
from tests.utils.factories import Actor, admin, job_body, listing_body, model_file, register

PARAMS = 200


@dataclass
class Scenario:
    client: TestClient
    clock: FakeClock
    keys: BuyerKeys
    buyer: Actor
    admin: Actor
    providers: list[Actor]
    job_id: str
    param_count: int = PARAMS
    listings: dict[str, str] = field(default_factory=dict)

    def job(self, who: Actor | None = None) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{self.job_id}", headers=(who or self.buyer).headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def round(self, number: int, who: Actor | None = None) -> dict[str, Any]:
        r = self.client.get(
            f"/v1/jobs/{self.job_id}/rounds/{number}", headers=(who or self.buyer).headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def envelope(
        self,
        provider: Actor,
        number: int,
        *,
        job_id: str | None = None,
        keys: BuyerKeys | None = None,
        value: float = 0.25,
        summands: int = 3,
    ) -> bytes:
        ctx = (keys or self.keys).public_context()
        binding = EnvelopeBinding(
            job_id or self.job_id, number, provider.id, self.param_count, summands
        )
        vector = np.full(self.param_count, value, dtype=np.float32)
        return encrypt_update(ctx, vector, binding=binding, weight=1.0, samples=100)

    def submit(self, provider: Actor, number: int, data: bytes | None = None) -> httpx.Response:
        body = self.envelope(provider, number) if data is None else data
        return self.client.put(
            f"/v1/jobs/{self.job_id}/rounds/{number}/submission",
            content=body,
            headers=provider.headers,
        )

    def tick(self) -> None:
        r = self.client.post("/v1/admin/tick", headers=self.admin.headers)
        assert r.status_code == 200, r.text

    def offers(self, provider: Actor) -> list[dict[str, Any]]:
        r = self.client.get("/v1/offers", headers=provider.headers)
        assert r.status_code == 200, r.text
        return [o for o in r.json() if o["job_id"] == self.job_id]

    def accept(self, provider: Actor) -> httpx.Response:
        (offer,) = self.offers(provider)
        return self.client.post(f"/v1/offers/{offer['id']}/accept", headers=provider.headers)


def draft_job(
    client: TestClient, keys: BuyerKeys, buyer: Actor, *, param_count: int = PARAMS, **spec: Any
) -> str:
    """A job with its public context and initial model uploaded (state `draft`)."""
    r = client.post("/v1/jobs", json=job_body(**spec), headers=buyer.headers)
    assert r.status_code == 201, r.text
    job_id = str(r.json()["id"])
    r = client.put(
        f"/v1/jobs/{job_id}/context",
        content=keys.public_context().to_bytes(),
        headers=buyer.headers,
    )
    assert r.status_code == 200, r.text
    r = client.put(
        f"/v1/jobs/{job_id}/model", content=model_file(param_count), headers=buyer.headers
    )
    assert r.status_code == 200, r.text
    return job_id


def fund(client: TestClient, job_id: str, buyer: Actor, operator: Actor, amount: int) -> None:
    r = client.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
    assert r.status_code == 200, r.text
    r = client.post(
        f"/v1/admin/jobs/{job_id}/credit", json={"amount_cents": amount}, headers=operator.headers
    )
    assert r.status_code == 200, r.text


def open_job(
    client: TestClient,
    clock: FakeClock,
    keys: BuyerKeys,
    *,
    providers: int = 3,
    accept: int = 0,
    **spec: Any,
) -> Scenario:
    """Providers with listings, and a funded job that matched them (`accept` of them accept)."""
    operator = admin(client)
    actors = [register(client, "provider", f"p{i}") for i in range(providers)]
    listing_ids = {}
    for p in actors:
        r = client.post("/v1/listings", json=listing_body(), headers=p.headers)
        assert r.status_code == 201, r.text
        listing_ids[p.id] = r.json()["id"]
    buyer = register(client, "buyer")
    job_id = draft_job(client, keys, buyer, **spec)
    fund(client, job_id, buyer, operator, int(job_body(**spec)["budget_cents"]))
    scn = Scenario(client, clock, keys, buyer, operator, actors, job_id, listings=listing_ids)
    for p in actors[:accept]:
        r = scn.accept(p)
        assert r.status_code == 200, r.text
    return scn


def running_job(client: TestClient, clock: FakeClock, keys: BuyerKeys, **spec: Any) -> Scenario:
    """A job in `running` with round 1 collecting and every provider accepted."""
    providers = int(spec.pop("providers", 3))
    scn = open_job(client, clock, keys, providers=providers, accept=providers, **spec)
    assert scn.job()["state"] == "running"
    return scn


def dead_upload_claim(client: TestClient, job_id: str, provider_id: str, at: datetime) -> None:
    """An upload claim for round 1 left by a server process killed mid-upload."""
    from sqlmodel import Session

    from market.models import UploadClaim

    app: Any = client.app
    with Session(app.state.engine) as s:
        s.add(
            UploadClaim(
                job_id=job_id, round_number=1, provider_id=provider_id, token="dead",
                heartbeat_at=at,
            )
        )  # fmt: skip
        s.commit()
