"""Quorum counts real parties on the Stripe rail: a provider is verified while its Connect
account (the Connect double, through the real `stripe` SDK) has `payouts_enabled`."""

from __future__ import annotations

import json
import time
from typing import Any

from agents.stripe_pay import confirm_card_payment
from tests.market import test_payments_stripe as _stripe
from tests.market.test_payments_stripe import SK, World, _signed
from tests.utils.factories import Actor, listing_body, register
from tests.utils.scenario import draft_job

# The stripe rail's fixtures: localstripe for funding, the Connect double for accounts.
stripe_url = _stripe.stripe_url
world = _stripe.world


def _provider(w: World, name: str) -> Actor:
    p = register(w.http, "provider", name, verified=False)  # type: ignore[arg-type]
    r = w.http.post("/v1/listings", json=listing_body(), headers=p.headers)
    assert r.status_code == 201, r.text
    return p


def _offers(w: World, who: Actor) -> list[dict[str, Any]]:
    return list(w.http.get("/v1/offers", headers=who.headers).json())


def _connect(w: World, who: Actor) -> dict[str, Any]:
    r = w.http.post("/v1/accounts/me/connect", headers=who.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _account_updated(w: World, acct: str, payouts_enabled: bool) -> str:
    payload = json.dumps({
        "id": f"evt_{acct}_{payouts_enabled}", "object": "event", "type": "account.updated",
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": acct, "object": "account", "payouts_enabled": payouts_enabled}},
    }).encode()  # fmt: skip
    r = w.http.post(
        "/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": _signed(payload)}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["action"])


def test_only_connect_accounts_with_payouts_enabled_count(world: World) -> None:
    """Sybil attack (Douceur, IPTPS 2002) on the Stripe rail: a provider whose Connect account
    cannot receive payouts (onboarding, hence Stripe's identity checks, not finished) is never
    matched; once `payouts_enabled` it is, and the job's quorum of 2 is made of two such."""
    honest, sybil = _provider(world, "clinic"), _provider(world, "buyer-sock")
    buyer = register(world.http, "buyer")  # type: ignore[arg-type]
    job_id = draft_job(world.http, world.keys, buyer, min_providers=2, max_providers=2)  # type: ignore[arg-type]
    pay = world.http.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers).json()["payment"]
    confirm_card_payment(pay["external_id"], api_key=SK, api_base=world.stripe_url)
    assert world.wait_state(job_id, buyer, "open")["state"] == "open"
    for p in (honest, sybil):
        me = _connect(world, p)  # onboarding starts: a Connect account, payouts not enabled
        assert me["verified_at"] is None
        assert _offers(world, p) == []
    world.connect.set_payouts_enabled(world.connect.account_of(honest.id), True)
    me = _connect(world, honest)
    assert me["verified_by"] == "stripe-connect" and me["verified_at"] is not None
    assert [o["job_id"] for o in _offers(world, honest)] == [job_id]
    assert _offers(world, sybil) == [] and _connect(world, sybil)["verified_at"] is None
    report = world.http.get(f"/v1/jobs/{job_id}/matching", headers=buyer.headers).json()
    assert report["state"] == "open" and report["offers"] == {"pending": 1}
    reasons = {e["reason"]: e["listings"] for e in report["excluded"]}
    assert reasons["provider not verified (by Stripe Connect or an operator)"] == 1
    assert len(world.connect.accounts) == 2  # one Connect account each, created once
    # Stripe disables the honest provider's payouts: its pending offer goes with its status.
    assert _account_updated(world, world.connect.account_of(honest.id), False) == "unverified"
    assert [o["state"] for o in _offers(world, honest)] == ["withdrawn"]


def test_account_updated_webhook_verifies_and_unverifies(world: World) -> None:
    """Stripe's signed `account.updated` event moves the verification both ways, so a
    provider whose payouts Stripe disables stops being matched without polling."""
    p = _provider(world, "clinic")
    _connect(world, p)
    acct = world.connect.account_of(p.id)
    assert _account_updated(world, acct, True) == "verified"
    assert world.http.get("/v1/accounts/me", headers=p.headers).json()["verified_by"] == (
        "stripe-connect"
    )
    assert _account_updated(world, acct, False) == "unverified"
    assert world.http.get("/v1/accounts/me", headers=p.headers).json()["verified_at"] is None
    assert _account_updated(world, "acct_unknown", True) == "unknown-account"
