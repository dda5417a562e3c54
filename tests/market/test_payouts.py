"""Review of money through the API on the manual rail: receipts, payouts, CSV batches."""

from __future__ import annotations

import csv
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from crypto import BuyerKeys
from market.models import Payout
from market.models.types import new_id
from tests.utils.clock import FakeClock
from tests.utils.factories import model_file
from tests.utils.scenario import PARAMS, Scenario, running_job


@pytest.fixture
def done(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> Scenario:
    """A completed 2-round job: 3 providers in round 1, 2 in round 2 (one missed it)."""
    scn = running_job(client, clock, buyer_keys, budget_cents=10_000, round_deadline_s=5)
    p1, p2, _ = scn.providers
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    r = client.put(
        f"/v1/jobs/{scn.job_id}/rounds/2/model",
        content=model_file(PARAMS),
        headers=scn.buyer.headers,
    )
    assert r.status_code == 201, r.text
    assert scn.submit(p1, 2).status_code == 201
    assert scn.submit(p2, 2).status_code == 201
    clock.advance(6)
    scn.tick()
    r = client.post(f"/v1/jobs/{scn.job_id}/complete", headers=scn.buyer.headers)
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    return scn


def test_receipt_adds_up(done: Scenario) -> None:
    """The buyer's receipt: funded = paid + fees + refunded + escrow, split per provider."""
    r = done.client.get(f"/v1/jobs/{done.job_id}/receipt", headers=done.buyer.headers)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert (rec["funded_cents"], rec["paid_cents"], rec["fees_cents"]) == (10_000, 9500, 500)
    assert (rec["refunded_cents"], rec["escrow_cents"], rec["balanced"]) == (0, 0, True)
    earned = {p["provider_id"]: p["earned_cents"] for p in rec["providers"]}
    assert sum(earned.values()) == 9500
    p1, p2, p3 = done.providers
    # Same samples everywhere: round 1 is split three ways, round 2 two ways.
    assert earned[p3.id] in (1583, 1584) and earned[p1.id] > 3900
    assert [rnd["round"] for rnd in rec["rounds"]] == [1, 2]
    assert rec["rounds"][1]["shares"].keys() == {p1.id, p2.id}


def test_manual_payout_batch_then_mark_paid(done: Scenario) -> None:
    """A payout run exports one CSV line per provider and job; marking it paid settles the
    providers' balances, and doing it again changes nothing."""
    client, admin = done.client, done.admin
    me = done.providers[0]
    mine = client.get("/v1/payouts", headers=me.headers).json()["earnings"]
    assert len(mine) == 1 and mine[0]["paid_cents"] == 0 and mine[0]["balance_cents"] > 0
    run = client.post("/v1/admin/payouts/run", headers=admin.headers).json()["batch"]
    assert run["rail"] == "manual" and run["status"] == "exported"
    rows = list(csv.DictReader(io.StringIO(run["csv"])))
    assert {r["provider_id"] for r in rows} == {p.id for p in done.providers}
    assert sum(int(r["amount_cents"]) for r in rows) == run["total_cents"] == 9500
    # Nothing new is owed: a second run pays nobody twice.
    assert client.post("/v1/admin/payouts/run", headers=admin.headers).json()["batch"] is None
    for _ in range(2):
        r = client.post(f"/v1/admin/payouts/{run['id']}/mark-paid", headers=admin.headers)
        assert r.status_code == 200 and r.json()["status"] == "paid"
    mine = client.get("/v1/payouts", headers=me.headers).json()["earnings"][0]
    assert mine["balance_cents"] == 0 and mine["paid_cents"] == mine["earned_cents"]
    assert mine["jobs"][0]["job_id"] == done.job_id
    assert [p["status"] for p in mine["payouts"]] == ["paid"]
    everyone = client.get("/v1/payouts", headers=admin.headers).json()
    assert len(everyone["earnings"]) == 3 and everyone["batches"][0]["status"] == "paid"
    rec = client.get(f"/v1/jobs/{done.job_id}/receipt", headers=done.buyer.headers).json()
    assert sum(p["transferred_cents"] for p in rec["providers"]) == 9500
    report = client.get("/v1/ledger/verify", headers=admin.headers).json()
    assert report["ok"] and report["totals"]["usd"]["transferred"] == 9500


def test_ledger_verify_public_summary(done: Scenario) -> None:
    """Anyone can check the chain; only admins see the platform's totals."""
    public = done.client.get("/v1/ledger/verify").json()
    assert public["ok"] and public["transactions"] >= 3 and public["totals"] == {}
    assert len(public["head_hash"]) == 64


def test_cancel_refund_shows_on_receipt(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A cancelled job's receipt shows the refund of everything not yet earned."""
    scn = running_job(client, clock, buyer_keys, budget_cents=9_999)
    for p in scn.providers:
        scn.submit(p, 1)
    r = client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert r.status_code == 200
    rec = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.admin.headers).json()
    # fee 499 (5% of 9999, rounded down); round 1 of 2: pool 4750, fee 249
    assert (rec["paid_cents"], rec["fees_cents"], rec["refunded_cents"]) == (4750, 249, 5000)
    assert rec["escrow_cents"] == 0 and rec["balanced"]
    assert [(p["kind"], p["status"], p["amount_cents"]) for p in rec["payments"]] == [
        ("refund", "recorded", 5000)
    ]


def _concurrent_runs(done: Scenario, count: int) -> list[dict[str, Any] | None]:
    barrier = threading.Barrier(count)

    def one(_: int) -> dict[str, Any] | None:
        barrier.wait()
        r = done.client.post("/v1/admin/payouts/run", headers=done.admin.headers)
        assert r.status_code == 200, r.text
        batch: dict[str, Any] | None = r.json()["batch"]
        return batch

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_payout_runs_make_one_batch(done: Scenario) -> None:
    """Four payout runs at the same instant: one batch pays each provider once; the other
    runs find nothing new owed (on Stripe Connect each duplicate would be a real transfer)."""
    batches = [b for b in _concurrent_runs(done, 4) if b is not None]
    assert len(batches) == 1, [b["id"] for b in batches]
    everyone = done.client.get("/v1/payouts", headers=done.admin.headers).json()
    assert len(everyone["batches"]) == 1
    payouts = batches[0]["payouts"]
    assert sorted(p["provider_id"] for p in payouts) == sorted(p.id for p in done.providers)
    assert sum(p["amount_cents"] for p in payouts) == 9500


def test_the_database_refuses_a_second_pending_payout(done: Scenario) -> None:
    """Whatever the code above it does, the database holds at most one pending payout per
    provider, job and currency."""
    run = done.client.post("/v1/admin/payouts/run", headers=done.admin.headers).json()["batch"]
    first = run["payouts"][0]
    app: Any = done.client.app
    with Session(app.state.engine) as session:
        session.add(
            Payout(
                id=new_id("pyo"), batch_id=run["id"], provider_id=first["provider_id"],
                job_id=first["job_id"], amount_cents=1, currency=first["currency"],
                status="pending",
            )
        )  # fmt: skip
        with pytest.raises(IntegrityError):
            session.commit()
