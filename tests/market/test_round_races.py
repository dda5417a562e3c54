"""Two deciders on one overdue round at once (the deadline task and a request): it closes
once, is settled once, and neither caller fails."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from crypto import BuyerKeys
from market.models import Job, Round
from market.services import rounds
from tests.utils.clock import FakeClock
from tests.utils.scenario import running_job


def test_concurrent_deadline_checks_close_the_round_once(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Four threads apply the deadline to the same round at the same instant: no error, one
    close, and the ledger verifies with the round's settlement written once."""
    scn = running_job(client, clock, buyer_keys, round_deadline_s=60)
    for p in scn.providers[:2]:
        assert scn.submit(p, 1).status_code == 201
    now = clock.advance(61)
    app: Any = client.app
    engine = app.state.engine
    barrier = threading.Barrier(4)

    def decide(_: int) -> str:
        with Session(engine, expire_on_commit=False) as session:
            job = session.get(Job, scn.job_id)
            assert job is not None
            rnd = session.exec(select(Round).where(Round.job_id == job.id)).one()
            barrier.wait()
            rounds.check_round(session, job, rnd, now=now)
            return rnd.state

    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(decide, range(4)))

    assert states == ["closed"] * 4
    rnd = scn.round(1)
    assert rnd["state"] == "closed" and rnd["close_reason"] == "deadline"
    report = client.get("/v1/ledger/verify").json()
    assert report["ok"] is True, report
    receipt = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    assert sum(1 for r in receipt["rounds"] if r["round"] == 1) == 1, receipt
