"""Several deciders on one overdue round at once (the deadline task of every server process,
and requests): it closes once, is settled once, no pass fails, and a pass that fails on one
job still decides the others."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from crypto import BuyerKeys
from market import Settings, create_app
from market.models import Round
from market.services import locks, rounds, settlement
from tests.conftest import ADMIN_KEY
from tests.utils import money, postgres
from tests.utils.clock import FakeClock
from tests.utils.scenario import Scenario, running_job


@pytest.fixture
def pg_client(
    pg_server: str, pg_template: str, tmp_path: Path, clock: FakeClock
) -> Iterator[TestClient]:
    """The app on a fresh PostgreSQL database only (row locks are what is under test)."""
    name = f"pollen_t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_server, name, template=pg_template)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, admin_api_key=ADMIN_KEY, deadline_tick_s=0
    )
    app = create_app(settings)
    app.state.clock = clock
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        postgres.drop_database(pg_server, name)


def _overdue(client: TestClient, clock: FakeClock, keys: BuyerKeys) -> Scenario:
    scn = running_job(client, clock, keys, round_deadline_s=60)
    for p in scn.providers[:2]:
        assert scn.submit(p, 1).status_code == 201
    clock.advance(61)
    return scn


def _passes(client: TestClient, clock: FakeClock, count: int) -> list[int]:
    app: Any = client.app
    barrier = threading.Barrier(count)

    def one(_: int) -> int:
        with Session(app.state.engine, expire_on_commit=False) as session:
            barrier.wait()
            return rounds.tick(session, now=clock.now)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def _closed_once(client: TestClient, scn: Scenario) -> None:
    rnd = scn.round(1)
    assert rnd["state"] == "closed" and rnd["close_reason"] == "deadline"
    report = client.get("/v1/ledger/verify").json()
    assert report["ok"] is True, report
    receipt = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    assert sum(1 for r in receipt["rounds"] if r["round"] == 1) == 1, receipt


def test_concurrent_deadline_passes_close_the_round_once(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Four deadline passes at the same instant: no error, one close, one settlement."""
    scn = _overdue(client, clock, buyer_keys)
    assert sorted(_passes(client, clock, 4)) == [0, 0, 0, 1]
    _closed_once(client, scn)


@pytest.mark.postgres
def test_deadline_passes_of_separate_processes_converge(
    pg_client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a lock shared in memory (as between server processes), only the database's row
    lock orders the passes: the round is still closed once and no pass aborts on a duplicate."""
    scn = _overdue(pg_client, clock, buyer_keys)
    monkeypatch.setattr(locks, "_lock_for", lambda job_id: threading.Lock())
    assert sum(_passes(pg_client, clock, 4)) == 1
    _closed_once(pg_client, scn)


def test_a_failing_job_does_not_stop_the_pass_for_the_others(
    client: TestClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One overdue job whose settlement fails is left for the next pass; the other overdue
    job in the same pass is closed."""
    app: Any = client.app
    with Session(app.state.engine, expire_on_commit=False) as session:
        jobs = [money.running_job(session, now=clock.now) for _ in range(2)]
        for mj in jobs:
            rnd = session.exec(select(Round).where(Round.job_id == mj.job.id)).one()
            for pid in mj.providers[:2]:
                money.submit(session, rnd, pid, 100, clock.now)
    clock.advance(61)
    broken_id = jobs[0].job.id
    real = settlement.on_round_closed

    def broken(session: Session, job: Any, rnd: Any, *, now: Any) -> None:
        if job.id == broken_id:
            raise RuntimeError("settlement failed")
        real(session, job, rnd, now=now)

    def states() -> list[str]:
        with Session(app.state.engine) as session:
            return [
                session.exec(select(Round.state).where(Round.job_id == mj.job.id)).one()
                for mj in jobs
            ]

    monkeypatch.setattr(settlement, "on_round_closed", broken)
    assert _passes(client, clock, 1) == [1]
    assert states() == ["collecting", "closed"]
    monkeypatch.setattr(settlement, "on_round_closed", real)
    assert _passes(client, clock, 1) == [1]
    assert states() == ["closed", "closed"]
    assert client.get("/v1/ledger/verify").json()["ok"] is True
