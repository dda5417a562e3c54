"""Replayed envelopes: bytes accepted once are refused anywhere else (the next round, another
job, another provider's slot) with a precise problem, and the refusal changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.factories import Actor, model_file
from tests.utils.scenario import Scenario, draft_job, fund, running_job
from tests.utils.snapshot import snapshot


def _refused(
    scn: Scenario, job_id: str, number: int, who: Actor, data: bytes, status: int, code: str
) -> dict[str, Any]:
    client = scn.client
    before = snapshot(client)
    r = client.put(
        f"/v1/jobs/{job_id}/rounds/{number}/submission", content=data, headers=who.headers
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status
    assert snapshot(client) == before
    return body


@pytest.fixture
def accepted(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> tuple[Scenario, bytes]:
    """Job A running with three providers; p0's envelope accepted in round 1."""
    scn = running_job(client, clock, buyer_keys, rounds=3)
    p0 = scn.providers[0]
    envelope = scn.envelope(p0, 1)
    assert scn.submit(p0, 1, envelope).status_code == 201
    return scn, envelope


def test_replay_by_the_same_provider_in_the_same_round(accepted: tuple[Scenario, bytes]) -> None:
    """The same bytes again are a duplicate: 409 carrying the first receipt."""
    scn, envelope = accepted
    body = _refused(scn, scn.job_id, 1, scn.providers[0], envelope, 409, "duplicate-submission")
    assert body["first"]["round"] == 1
    assert scn.round(1)["submitted"] == 1


def test_replay_by_another_provider(accepted: tuple[Scenario, bytes]) -> None:
    """p1 uploading p0's accepted envelope as its own is refused: bound to p0."""
    scn, envelope = accepted
    p0, p1 = scn.providers[:2]
    body = _refused(scn, scn.job_id, 1, p1, envelope, 422, "binding-mismatch")
    assert "provider_id" in body["detail"] and p0.id in body["detail"]
    assert scn.round(1)["submitted"] == 1
    assert scn.submit(p1, 1).status_code == 201  # its own envelope still goes in


def test_replay_into_the_next_round(accepted: tuple[Scenario, bytes]) -> None:
    """Round 1's envelope sent again in round 2 is refused: bound to round 1."""
    scn, envelope = accepted
    p0 = scn.providers[0]
    for p in scn.providers[1:]:
        assert scn.submit(p, 1).status_code == 201
    r = scn.client.put(
        f"/v1/jobs/{scn.job_id}/rounds/2/model",
        content=model_file(seed=2),
        headers=scn.buyer.headers,
    )
    assert r.status_code == 201, r.text
    body = _refused(scn, scn.job_id, 2, p0, envelope, 422, "binding-mismatch")
    assert "round=1" in body["detail"] and "expected 2" in body["detail"]
    assert scn.round(2)["submitted"] == 0
    assert scn.submit(p0, 2).status_code == 201


def test_replay_into_another_job(
    accepted: tuple[Scenario, bytes], buyer_keys: BuyerKeys, other_buyer_keys: BuyerKeys
) -> None:
    """Job A's envelope sent to job B (same buyer key) is refused as bound to A; to a job
    under another buyer's key, as encrypted under the wrong key."""
    scn, envelope = accepted
    p0 = scn.providers[0]
    client = scn.client
    for p in scn.providers:  # room for two more jobs each
        r = client.patch(
            f"/v1/listings/{scn.listings[p.id]}", json={"capacity": 5}, headers=p.headers
        )
        assert r.status_code == 200, r.text
    job_b = draft_job(client, buyer_keys, scn.buyer, rounds=3)
    fund(client, job_b, scn.buyer, scn.admin, 10_000)
    other = Scenario(client, scn.clock, buyer_keys, scn.buyer, scn.admin, scn.providers, job_b)
    for p in scn.providers:
        assert other.accept(p).status_code == 200
    assert other.job()["state"] == "running"
    body = _refused(scn, job_b, 1, p0, envelope, 422, "binding-mismatch")
    assert scn.job_id in body["detail"] and job_b in body["detail"]
    assert other.round(1)["submitted"] == 0

    stranger = client.post("/v1/accounts", json={"role": "buyer", "name": "c"}).json()
    buyer_c = Actor(stranger["id"], "buyer", stranger["api_key"])
    job_c = draft_job(client, other_buyer_keys, buyer_c, rounds=3)
    fund(client, job_c, buyer_c, scn.admin, 10_000)
    third = Scenario(client, scn.clock, other_buyer_keys, buyer_c, scn.admin, scn.providers, job_c)
    for p in scn.providers:
        assert third.accept(p).status_code == 200
    _refused(scn, job_c, 1, p0, envelope, 422, "fingerprint-mismatch")
    assert third.round(1, buyer_c)["submitted"] == 0
    assert other.submit(p0, 1).status_code == 201  # p0's own envelope for B goes in
