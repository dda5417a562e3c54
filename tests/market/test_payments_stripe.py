"""The `stripe` rail against real localstripe (PaymentIntents, webhooks, refunds) and the
Connect double (accounts, transfers), with the real `stripe` SDK on both sides."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from agents.stripe_pay import confirm_card_payment
from crypto import BuyerKeys
from market import Settings, create_app
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, Actor, admin, register
from tests.utils.scenario import draft_job, open_job
from tests.utils.stripe_connect_double import ConnectDouble
from tests.utils.stripe_env import free_port, localstripe, register_webhook, serve_in_thread

SECRET = "whsec_pollen_test"
SK = "sk_test_pollen"


@pytest.fixture(scope="session")
def stripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with localstripe(tmp_path_factory.mktemp("localstripe")) as url:
        yield url


@dataclass
class World:
    http: httpx.Client
    url: str
    stripe_url: str
    connect: ConnectDouble
    clock: FakeClock
    keys: BuyerKeys

    def wait_state(
        self, job_id: str, who: Actor, state: str, timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/v1/jobs/{job_id}", headers=who.headers).json()
            if job["state"] == state or time.monotonic() > deadline:
                return dict(job)
            time.sleep(0.1)


@pytest.fixture
def world(db_url: str, tmp_path: Path, stripe_url: str, buyer_keys: BuyerKeys) -> Iterator[World]:
    """The app on the stripe rail, served on loopback so localstripe's webhooks reach it."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=db_url, admin_api_key=ADMIN_KEY,
        deadline_tick_s=0, stripe_api_key=SK, stripe_api_base=stripe_url,
        stripe_webhook_secret=SECRET,
    )  # fmt: skip
    with ConnectDouble() as connect:
        settings.stripe_connect_api_base = connect.url
        app = create_app(settings)
        clock = FakeClock()
        app.state.clock = clock
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            register_webhook(stripe_url, f"{url}/v1/webhooks/stripe", SECRET)
            yield World(http, url, stripe_url, connect, clock, buyer_keys)


def _fund(w: World, budget: int = 12_345) -> tuple[Actor, str, dict[str, Any]]:
    buyer = register(w.http, "buyer")  # type: ignore[arg-type]
    job_id = draft_job(w.http, w.keys, buyer, budget_cents=budget)  # type: ignore[arg-type]
    r = w.http.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
    assert r.status_code == 200, r.text
    return buyer, job_id, r.json()


def _receipt(w: World, job_id: str, who: Actor) -> dict[str, Any]:
    r = w.http.get(f"/v1/jobs/{job_id}/receipt", headers=who.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _signed(payload: bytes, secret: str = SECRET) -> str:
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_payment_intent_and_webhook_open_the_job(world: World) -> None:
    """The buyer confirms the PaymentIntent with a test card; the signed webhook opens the job
    and the budget lands in escrow."""
    buyer, job_id, funding = _fund(world)
    pay = funding["payment"]
    assert funding["state"] == "funding" and pay["rail"] == "stripe"
    assert pay["external_id"].startswith("pi_") and pay["client_secret"].startswith(
        pay["external_id"]
    )
    assert pay["amount_cents"] == 12_345 and pay["status"] == "requires_payment_method"
    status = confirm_card_payment(pay["external_id"], api_key=SK, api_base=world.stripe_url)
    assert status == "succeeded"
    assert world.wait_state(job_id, buyer, "open")["state"] == "open"
    rec = _receipt(world, job_id, buyer)
    assert (rec["rail"], rec["funded_cents"], rec["escrow_cents"]) == ("stripe", 12_345, 12_345)
    assert rec["payments"][0]["status"] == "succeeded"


def test_polling_when_no_webhook_arrives(world: World) -> None:
    """With webhooks lost, asking to fund again polls the PaymentIntent and opens the job."""
    register_webhook(world.stripe_url, f"http://127.0.0.1:{free_port()}/lost", SECRET)
    buyer, job_id, funding = _fund(world)
    confirm_card_payment(funding["payment"]["external_id"], api_key=SK, api_base=world.stripe_url)
    time.sleep(1.5)
    assert world.wait_state(job_id, buyer, "open", timeout=0)["state"] == "funding"
    again = world.http.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers).json()
    assert again["payment"]["external_id"] == funding["payment"]["external_id"]
    assert world.wait_state(job_id, buyer, "open", timeout=0)["state"] == "open"
    assert _receipt(world, job_id, buyer)["funded_cents"] == 12_345


def _event(pi: dict[str, Any]) -> bytes:
    return json.dumps({
        "id": "evt_replayed", "object": "event", "type": "payment_intent.succeeded",
        "created": int(time.time()), "livemode": False, "data": {"object": pi},
    }).encode()  # fmt: skip


def test_bad_signature_changes_nothing(world: World) -> None:
    """A webhook with a wrong signature is a 400 problem and moves no money."""
    register_webhook(world.stripe_url, f"http://127.0.0.1:{free_port()}/lost", SECRET)
    buyer, job_id, funding = _fund(world)
    pi_id = funding["payment"]["external_id"]
    confirm_card_payment(pi_id, api_key=SK, api_base=world.stripe_url)
    client = stripe.StripeClient(SK, base_addresses={"api": world.stripe_url})
    payload = _event(client.v1.payment_intents.retrieve(pi_id).to_dict())
    for header in (_signed(payload, "whsec_wrong"), "t=1,v1=deadbeef", None):
        headers = {"Content-Type": "application/json"}
        if header:
            headers["Stripe-Signature"] = header
        r = world.http.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert r.status_code == 400 and r.json()["code"] == "webhook-signature"
        assert r.headers["content-type"].startswith("application/problem+json")
    assert world.wait_state(job_id, buyer, "open", timeout=0)["state"] == "funding"
    assert world.http.get("/v1/ledger/verify").json()["transactions"] == 0
    # The same event, signed properly, is accepted; its replay is a no-op.
    actions = []
    for _ in range(2):
        r = world.http.post(
            "/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": _signed(payload)}
        )
        assert r.status_code == 200, r.text
        actions.append(r.json()["action"])
    assert actions == ["funded", "duplicate"]
    assert _receipt(world, job_id, buyer)["funded_cents"] == 12_345
    assert world.http.get("/v1/ledger/verify").json()["transactions"] == 1


def test_cancel_refunds_through_stripe(world: World) -> None:
    """Cancelling a Stripe-funded job issues a Stripe Refund for the whole unspent escrow."""
    buyer, job_id, funding = _fund(world, budget=5_000)
    confirm_card_payment(funding["payment"]["external_id"], api_key=SK, api_base=world.stripe_url)
    world.wait_state(job_id, buyer, "open")
    r = world.http.post(f"/v1/jobs/{job_id}/cancel", headers=buyer.headers)
    assert r.status_code == 200, r.text
    rec = _receipt(world, job_id, buyer)
    assert (rec["refunded_cents"], rec["escrow_cents"], rec["balanced"]) == (5_000, 0, True)
    refund = next(p for p in rec["payments"] if p["kind"] == "refund")
    assert refund["status"] == "succeeded" and refund["external_id"].startswith("re_")
    client = stripe.StripeClient(SK, base_addresses={"api": world.stripe_url})
    seen = client.v1.refunds.retrieve(refund["external_id"])
    assert (seen.amount, seen.payment_intent) == (5_000, funding["payment"]["external_id"])


def test_connect_transfers_pay_providers(world: World, tmp_path: Path) -> None:
    """Payouts create one connected account per provider and one transfer per provider and
    job; a failed transfer is retried under the same idempotency key and paid once. Each
    transfer has the server's signed payout record naming it, and every party's audit of
    the money (settled at cancel, fee and refund included) passes."""
    scn = open_job(world.http, world.clock, world.keys, providers=3, accept=3)  # type: ignore[arg-type]
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    world.http.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    operator = admin(world.http)  # type: ignore[arg-type]
    world.connect.fail_next = 1
    batch = world.http.post("/v1/admin/payouts/run", headers=operator.headers).json()["batch"]
    assert batch["rail"] == "stripe" and batch["status"] == "partial"
    assert sorted(p["status"] for p in batch["payouts"]) == ["paid", "paid", "pending"]
    again = world.http.post("/v1/admin/payouts/run", headers=operator.headers).json()
    assert again["batch"] is None  # nothing new owed; the pending transfer was retried
    view = world.http.get("/v1/payouts", headers=operator.headers).json()
    assert view["batches"][0]["status"] == "paid"
    transfers = list(world.connect.transfers.values())
    assert len(transfers) == 3 and len(world.connect.accounts) == 3
    assert {t["transfer_group"] for t in transfers} == {scn.job_id}
    earned = {e["provider_id"]: e["earned_cents"] for e in view["earnings"]}
    by_dest = {t["metadata"]["provider_id"]: t["amount"] for t in transfers}
    assert by_dest == earned
    assert all(e["balance_cents"] == 0 for e in view["earnings"])
    report = world.http.get("/v1/ledger/verify", headers=operator.headers).json()
    assert report["ok"] and report["totals"]["usd"]["transferred"] == sum(earned.values())
    from agents.audit import audit
    from agents.client import PollenClient
    from agents.trust import Trust

    for i, p in enumerate(scn.providers):
        with PollenClient(world.url, p.api_key) as api:
            paid = [r.record["body"] for r in api.my_records() if r.kind == "payout"]
            assert [b["rail"] for b in paid] == ["stripe"]
            assert paid[0]["rail_reference"] in world.connect.transfers
            assert paid[0]["cents"] == by_dest[p.id]
            assert audit(api, Trust(tmp_path / f"p{i}" / "trust.json"))
    with PollenClient(world.url, scn.buyer.api_key) as api:
        assert audit(api, Trust(tmp_path / "buyer" / f"{scn.job_id}.trust.json"))


def test_funding_cut_off_by_a_stripe_outage_can_be_asked_again(
    db_url: str,
    tmp_path: Path,
    stripe_url: str,
    buyer_keys: BuyerKeys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stripe unreachable when the buyer asks to fund: a clear 5xx problem, logged as the
    outage it is (a warning, not an unexpected error), and asking again once Stripe is back
    makes the PaymentIntent (the job is not left in `funding` with no payment to check,
    which refused every later call with 409)."""

    def app_on(stripe_base: str) -> Any:
        settings = Settings(
            data_dir=tmp_path / "data", database_url=db_url, admin_api_key=ADMIN_KEY,
            deadline_tick_s=0, stripe_api_key=SK, stripe_api_base=stripe_base,
            stripe_webhook_secret=SECRET,
        )  # fmt: skip
        return create_app(settings)

    from fastapi.testclient import TestClient

    with TestClient(app_on(f"http://127.0.0.1:{free_port()}")) as down:
        buyer = register(down, "buyer")
        job_id = draft_job(down, buyer_keys, buyer, budget_cents=4_321)
        with caplog.at_level(logging.WARNING, logger="market.problems"):
            r = down.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
        assert r.status_code in (502, 503), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        logged = [x for x in caplog.records if x.name == "market.problems"]
        assert logged and all(x.levelno == logging.WARNING for x in logged)
    with TestClient(app_on(stripe_url)) as up:
        r = up.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
        assert r.status_code == 200, r.text
        pay = r.json()["payment"]
        assert pay["external_id"].startswith("pi_") and pay["amount_cents"] == 4_321
        again = up.post(f"/v1/jobs/{job_id}/fund", headers=buyer.headers)
        assert again.status_code == 200, again.text
        assert again.json()["payment"]["external_id"] == pay["external_id"]
