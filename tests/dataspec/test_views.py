"""The server's answers are the wire contract's views: an agent parses every one of them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from crypto import BuyerKeys
from dataspec.views import (
    AccountCreated,
    AccountPublic,
    JobFunding,
    JobPublic,
    ListingPublic,
    MatchingPublic,
    OfferPublic,
    PrivacyReportPublic,
    RoundPublic,
    SubmissionReceipt,
)
from tests.utils.clock import FakeClock
from tests.utils.factories import listing_body
from tests.utils.scenario import running_job


def _fits(view: type[BaseModel], body: Any) -> None:
    """`body` parses as `view` and says nothing the view leaves out."""
    parsed = view.model_validate(body)
    assert parsed.model_dump(mode="json", by_alias=True).keys() == body.keys()


def test_every_answer_an_agent_reads_parses_as_its_view(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Accounts, listings, jobs, funding, matching, offers, rounds, receipts and privacy
    reports, as the server sends them, are the views `PollenClient` returns."""
    r = client.post("/v1/accounts", json={"role": "provider", "name": "p"})
    _fits(AccountCreated, r.json())
    scn = running_job(client, clock, buyer_keys)
    buyer, provider = scn.buyer, scn.providers[0]
    _fits(AccountPublic, client.get("/v1/accounts/me", headers=provider.headers).json())
    listing = client.post("/v1/listings", json=listing_body(), headers=provider.headers).json()
    _fits(ListingPublic, listing)
    for body in client.get("/v1/listings", headers=provider.headers).json():
        _fits(ListingPublic, body)
    _fits(JobPublic, scn.job())
    _fits(JobPublic, scn.job(provider))
    for body in client.get("/v1/jobs", headers=buyer.headers).json():
        _fits(JobPublic, body)
    for body in client.get("/v1/offers", headers=provider.headers).json():
        _fits(OfferPublic, body)
    _fits(RoundPublic, scn.round(1))
    _fits(RoundPublic, scn.round(1, provider))
    r = scn.submit(provider, 1)
    assert r.status_code == 201, r.text
    _fits(SubmissionReceipt, r.json())
    privacy = {"round": 1, "epsilon": 0.5, "delta": 1e-5}
    path = f"/v1/jobs/{scn.job_id}/privacy"
    _fits(PrivacyReportPublic, client.post(path, json=privacy, headers=provider.headers).json())
    for body in client.get(path, headers=buyer.headers).json():
        _fits(PrivacyReportPublic, body)


def test_funding_and_matching_parse_as_their_views(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A job asking for funding, and why it has the offers it has, parse as their views."""
    from tests.utils.factories import register
    from tests.utils.scenario import draft_job

    buyer = register(client, "buyer")
    job_id = draft_job(client, buyer_keys, buyer)
    r = client.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
    assert r.status_code == 200, r.text
    _fits(JobFunding, r.json())
    r = client.get(f"/v1/jobs/{job_id}/matching", headers=buyer.headers)
    assert r.status_code == 200, r.text
    _fits(MatchingPublic, r.json())


def test_money_and_log_answers_parse_as_their_views(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Credits, ticks, payouts and their runs, reputation, receipts, the ledger report, the
    log's key, head, proofs and leaves, identities and signed records, as the server sends
    them, are the views `PollenClient` returns."""
    from crypto.identity import IdentityKey
    from dataspec.money import (
        CreditPublic,
        LedgerReport,
        PayoutBatchPublic,
        PayoutRun,
        PayoutsView,
        Receipt,
        ReputationPublic,
    )
    from dataspec.records import (
        Identity,
        Inclusion,
        Leaf,
        LoggedRecord,
        Proof,
        ServerKey,
        SignedRecord,
    )
    from dataspec.views import TickResult
    from tests.utils.factories import register
    from tests.utils.scenario import draft_job

    scn = running_job(client, clock, buyer_keys)
    admin = {"headers": scn.admin.headers}
    buyer = register(client, "buyer")
    job_id = draft_job(client, buyer_keys, buyer)
    assert client.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers).status_code == 200
    r = client.post(f"/v1/admin/jobs/{job_id}/credit", json={"amount_cents": 5}, **admin)
    _fits(CreditPublic, r.json())
    _fits(TickResult, client.post("/v1/admin/tick", **admin).json())
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    _fits(PayoutsView, client.get("/v1/payouts", **admin).json())
    run = client.post("/v1/admin/payouts/run", **admin).json()
    _fits(PayoutRun, run)
    _fits(PayoutBatchPublic, run["batch"])
    path = f"/v1/admin/payouts/{run['batch']['id']}/mark-paid"
    _fits(PayoutBatchPublic, client.post(path, **admin).json())
    for body in client.get("/v1/reputation").json():
        _fits(ReputationPublic, body)
    _fits(ReputationPublic, client.get(f"/v1/reputation/{scn.providers[0].id}").json())
    _fits(Receipt, client.get(f"/v1/jobs/{scn.job_id}/receipt", **admin).json())
    _fits(LedgerReport, client.get("/v1/ledger/verify", **admin).json())
    _fits(ServerKey, client.get("/v1/log/key").json())
    head = client.get("/v1/log/head").json()
    _fits(SignedRecord, head)
    size = head["body"]["size"]
    _fits(Proof, client.get(f"/v1/log/consistency?first=1&second={size}").json())
    _fits(Inclusion, client.get(f"/v1/log/inclusion?index=0&size={size}").json())
    _fits(Leaf, client.get("/v1/log/leaves/0", **admin).json())
    key = IdentityKey.generate()
    record = key.record("identity", {"account_id": buyer.id, "public_key": key.public_hex})
    r = client.put("/v1/accounts/me/identity", json=record, headers=buyer.headers)
    _fits(Identity, r.json())
    _fits(Identity, client.get(f"/v1/accounts/{buyer.id}/identity", **admin).json())
    for body in client.get(f"/v1/jobs/{scn.job_id}/records", **admin).json():
        _fits(LoggedRecord, body)
    for body in client.get("/v1/accounts/me/records", headers=scn.providers[0].headers).json():
        _fits(LoggedRecord, body)
