"""Quorum counts real parties: only verified providers are matched (manual rail: an operator's
approval), so a buyer's sybil provider accounts can never complete a quorum around a victim."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from crypto import BuyerKeys, decrypt_aggregate
from market import Settings, create_app
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, Actor, admin, listing_body, register
from tests.utils.scenario import Scenario, draft_job, fund

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _sybil_setup(client: TestClient, keys: BuyerKeys) -> tuple[Actor, Actor, Actor, str]:
    """One real (approved) provider, and a buyer with its own freshly registered provider
    account; both list data, then the buyer posts and funds a job with a quorum of 2."""
    real = register(client, "provider", "clinic")
    buyer = register(client, "buyer", "curious")
    sybil = register(client, "provider", "buyer-sock", verified=False)
    for p in (real, sybil):
        assert (
            client.post("/v1/listings", json=listing_body(), headers=p.headers).status_code == 201
        )
    job_id = draft_job(client, keys, buyer, min_providers=2, max_providers=2, quorum=2)
    fund(client, job_id, buyer, admin(client), 10_000)
    return real, buyer, sybil, job_id


def _offers(client: TestClient, who: Actor, job_id: str) -> list[dict[str, object]]:
    r = client.get("/v1/offers", headers=who.headers)
    assert r.status_code == 200, r.text
    return [o for o in r.json() if o["job_id"] == job_id]


def test_buyer_sybil_cannot_make_quorum_with_one_real_provider(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Sybil attack on secure aggregation (Douceur, "The Sybil Attack", IPTPS 2002; Bonawitz
    et al., CCS 2017, threat model): a buyer's own provider account never gets an offer, so
    the job waits for a second real party instead of running with quorum {victim, sybil}
    and handing the buyer a sum minus its own update."""
    real, buyer, sybil, job_id = _sybil_setup(client, buyer_keys)
    assert len(_offers(client, real, job_id)) == 1
    assert _offers(client, sybil, job_id) == []
    job = client.get(f"/v1/jobs/{job_id}", headers=buyer.headers).json()
    assert job["state"] == "open"
    report = client.get(f"/v1/jobs/{job_id}/matching", headers=buyer.headers).json()
    reasons = {e["reason"]: e["listings"] for e in report["excluded"]}
    assert reasons["provider not verified (by Stripe Connect or an operator)"] == 1
    # The sybil cannot vouch for itself, nor can the buyer.
    for who in (sybil, buyer):
        r = client.post(f"/v1/admin/providers/{sybil.id}/approve", headers=who.headers)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert _offers(client, sybil, job_id) == []


def test_without_the_rule_the_sybil_isolates_the_victim(
    settings: Settings, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """What the rule prevents, shown with it switched off: the sybil is matched, the round
    closes with quorum 2, and the buyer recovers the real provider's update exactly."""
    app = create_app(settings.model_copy(update={"require_verified_providers": False}))
    app.state.clock = clock
    with TestClient(app) as client:
        real, buyer, sybil, job_id = _sybil_setup(client, buyer_keys)
        for p in (real, sybil):
            (offer,) = _offers(client, p, job_id)
            r = client.post(f"/v1/offers/{offer['id']}/accept", headers=p.headers)
            assert r.status_code == 200, r.text
        scn = Scenario(client, clock, buyer_keys, buyer, admin(client), [real, sybil], job_id)
        r = scn.submit(real, 1, scn.envelope(real, 1, value=0.3, summands=2))
        assert r.status_code == 201, r.text
        assert (
            scn.submit(sybil, 1, scn.envelope(sybil, 1, value=0.0, summands=2)).status_code == 201
        )
        r = client.get(f"/v1/jobs/{job_id}/rounds/1/aggregate", headers=buyer.headers)
        assert r.status_code == 200, r.text
        agg = decrypt_aggregate(buyer_keys, r.content)
        assert agg.count == 2
        assert np.allclose(agg.total, 0.3, atol=1e-2)  # sybil sent zeros: the victim's update


def test_operator_approval_matches_and_revocation_withdraws(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Approving a provider matches its listings at once; revoking withdraws its pending
    offer, and the place goes to another verified provider."""
    _, _, late, job_id = _sybil_setup(client, buyer_keys)
    r = client.post(f"/v1/admin/providers/{late.id}/approve", headers=OPERATOR)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified_by"] == admin(client).id and body["verified_at"] is not None
    (offer,) = _offers(client, late, job_id)
    assert offer["state"] == "pending"
    again = client.post(f"/v1/admin/providers/{late.id}/approve", headers=OPERATOR).json()
    assert again["verified_at"] == body["verified_at"]  # idempotent
    waiting = register(client, "provider", "waiting")  # the job's 2 places are taken
    assert (
        client.post("/v1/listings", json=listing_body(), headers=waiting.headers).status_code == 201
    )
    assert _offers(client, waiting, job_id) == []
    r = client.post(f"/v1/admin/providers/{late.id}/revoke", headers=OPERATOR)
    assert r.status_code == 200 and r.json()["verified_at"] is None
    assert [o["state"] for o in _offers(client, late, job_id)] == ["withdrawn"]
    r = client.post(f"/v1/offers/{offer['id']}/accept", headers=late.headers)
    assert r.status_code == 409
    assert [o["state"] for o in _offers(client, waiting, job_id)] == ["pending"]


def test_approve_and_revoke_refusals_change_nothing(client: TestClient) -> None:
    """Unknown account: 404; a buyer account: 422; not an admin: 403; all problem+json, and
    the account stays as it was."""
    buyer = register(client, "buyer", "b")
    provider = register(client, "provider", "p", verified=False)
    for action in ("approve", "revoke"):
        r = client.post(f"/v1/admin/providers/prv_nope/{action}", headers=OPERATOR)
        assert r.status_code == 404 and r.json()["code"] == "not-found"
        assert r.headers["content-type"].startswith("application/problem+json")
        r = client.post(f"/v1/admin/providers/{buyer.id}/{action}", headers=OPERATOR)
        assert r.status_code == 422 and "not a provider" in r.json()["detail"]
        r = client.post(f"/v1/admin/providers/{provider.id}/{action}", headers=provider.headers)
        assert r.status_code == 403
    me = client.get("/v1/accounts/me", headers=provider.headers).json()
    assert me["verified_at"] is None and me["verified_by"] is None


def test_connect_onboarding_is_refused_on_the_manual_rail(client: TestClient) -> None:
    """Without Stripe Connect there is nothing to onboard: a clear 409, nothing created."""
    provider = register(client, "provider", "p", verified=False)
    r = client.post("/v1/accounts/me/connect", headers=provider.headers)
    assert r.status_code == 409 and "operator approves providers" in r.json()["detail"]


def test_provider_page_shows_verification(client: TestClient) -> None:
    """The public provider page says whether the provider is verified, and by whom."""
    approved = register(client, "provider", "clinic")
    sybil = register(client, "provider", "sock", verified=False)
    page = client.get(f"/ui/providers/{approved.id}")
    assert page.status_code == 200 and "approved by an operator on" in page.text
    page = client.get(f"/ui/providers/{sybil.id}")
    assert "not verified: never matched to a job" in page.text
