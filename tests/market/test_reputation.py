"""Reputation: Beta score with decay, events with reasons, and matching's use of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event
from sqlmodel import Session, select

from crypto import BuyerKeys
from market.models import ReputationEvent
from market.services import reputation
from tests.utils.clock import FakeClock
from tests.utils.factories import admin, listing_body, register
from tests.utils.scenario import draft_job, fund, running_job

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _session(client: TestClient) -> Session:
    app: Any = client.app
    return Session(app.state.engine, expire_on_commit=False)


def test_score_is_beta_with_decay(client: TestClient) -> None:
    """α/(α+β) from the events; an old event counts decay^days, the prior is 0.5."""
    p = register(client, "provider")
    with _session(client) as s:
        assert reputation.score(s, p.id, now=T0) == 0.5
        reputation.record(s, p.id, "included", "r1", key="a", now=T0)
        reputation.record(s, p.id, "included", "r1 again", key="a", now=T0)  # same key: once
        reputation.record(s, p.id, "invalid-submission", "bad", key="b", now=T0)
        s.commit()
        # α = 1 + 1, β = 1 + 2
        assert reputation.score(s, p.id, now=T0) == pytest.approx(2 / 5)
        later = T0 + timedelta(days=30)
        d = 0.98**30
        assert reputation.score(s, p.id, now=later) == pytest.approx(
            (1 + d) / ((1 + d) + (1 + 2 * d))
        )


def test_recording_a_close_worth_of_events_asks_for_their_keys_in_batches(
    client: TestClient,
) -> None:
    """A round's close records two events per provider: 1,200 of them cost 3 lookups of
    known keys (500 a query), not 1,200; a key already on record, or twice in the batch,
    is recorded once."""
    p = register(client, "provider")
    app: Any = client.app
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM reputation_event" in statement:
            statements.append(statement)

    with _session(client) as s:
        reputation.record(s, p.id, "included", "earlier", key="k7", now=T0)
        s.commit()
        events = [reputation.Event(p.id, "included", f"r{i}", f"k{i}") for i in range(1200)]
        events.append(reputation.Event(p.id, "included", "again", "k3"))
        sa_event.listen(app.state.engine, "before_cursor_execute", seen)
        try:
            assert reputation.record_all(s, events, now=T0) == 1199
            s.commit()
        finally:
            sa_event.remove(app.state.engine, "before_cursor_execute", seen)
        assert len(statements) == 3
        keys = s.exec(select(ReputationEvent.key).where(ReputationEvent.provider_id == p.id))
        assert sorted(keys.all()) == sorted(f"k{i}" for i in range(1200))
        # Recorded again, nothing is new.
        assert reputation.record_all(s, events, now=T0) == 0


def test_rounds_write_reputation_with_reasons(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Submitting on time raises a score; missing the deadline lowers it; each has a reason."""
    scn = running_job(client, clock, buyer_keys, round_deadline_s=5)
    p1, p2, p3 = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    clock.advance(6)
    scn.tick()
    good = client.get(f"/v1/reputation/{p1.id}").json()
    bad = client.get(f"/v1/reputation/{p3.id}").json()
    assert good["score"] > 0.5 > bad["score"]
    assert {e["kind"] for e in good["history"]} == {"on-time-submission", "included"}
    assert [e["kind"] for e in bad["history"]] == ["missed-deadline"]
    # The provider itself (and the job's buyer) reads which job and round it was.
    own = client.get(f"/v1/reputation/{p3.id}", headers=p3.headers).json()
    assert scn.job_id in own["history"][0]["reason"] and own["history"][0]["round"] == 1
    everyone = client.get("/v1/reputation").json()
    assert {r["provider_id"] for r in everyone} >= {p1.id, p2.id, p3.id}
    assert client.get(f"/v1/reputation/{scn.buyer.id}").status_code == 404


def test_invalid_submission_costs_reputation(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """An envelope refused by validation is a recorded negative event for its sender."""
    scn = running_job(client, clock, buyer_keys)
    p1 = scn.providers[0]
    assert scn.submit(p1, 1, b"\x00garbage").status_code == 422
    rep = client.get(f"/v1/reputation/{p1.id}").json()
    assert [e["kind"] for e in rep["history"]] == ["invalid-submission"]
    assert rep["score"] < 0.5


def test_matching_filters_by_min_reputation(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A job's min_reputation keeps providers with a poor record from getting offers."""
    good, bad = register(client, "provider", "good"), register(client, "provider", "bad")
    for p in (good, bad):
        assert (
            client.post("/v1/listings", json=listing_body(), headers=p.headers).status_code == 201
        )
    with _session(client) as s:
        now = clock()
        reputation.record(s, good.id, "included", "ok", key="g", now=now)
        reputation.record(s, bad.id, "missed-deadline", "late", key="b", now=now)
        s.commit()
    buyer = register(client, "buyer")
    job_id = draft_job(client, buyer_keys, buyer, min_reputation=0.5)
    fund(client, job_id, buyer, admin(client), 10_000)
    offers = client.get("/v1/offers", headers=admin(client).headers).json()
    offered = {o["provider_id"] for o in offers if o["job_id"] == job_id}
    assert offered == {good.id}


def test_withdrawing_after_accepting_costs_reputation(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Declining an offer already accepted drops the provider from the job and the round,
    with a recorded negative event; the others' round then closes without it."""
    scn = running_job(client, clock, buyer_keys)
    p1, p2, p3 = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    (offer,) = scn.offers(p3)
    r = client.post(f"/v1/offers/{offer['id']}/decline", headers=p3.headers)
    assert r.status_code == 200 and r.json()["state"] == "dropped"
    assert scn.round(1)["state"] == "closed"
    rep = client.get(f"/v1/reputation/{p3.id}").json()
    assert [e["kind"] for e in rep["history"]] == ["refused-after-accept"]
    assert rep["score"] < 0.5


def test_public_history_does_not_say_who_took_part_in_which_job(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Anonymous visitors, other providers and other buyers read each event's kind, weight
    and day, never the job or round, nor an instant that matches a round's close; the
    provider itself, operators and the job's buyer read it all (API and dashboard)."""
    scn = running_job(client, clock, buyer_keys, round_deadline_s=5)
    p1, p2, _ = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    clock.advance(6)
    scn.tick()
    stranger = register(client, "buyer", "stranger")
    for headers in ({}, p2.headers, stranger.headers):
        for view in (
            client.get(f"/v1/reputation/{p1.id}", headers=headers).json(),
            next(
                r
                for r in client.get("/v1/reputation", headers=headers).json()
                if r["provider_id"] == p1.id
            ),
        ):
            assert view["history"], view
            for event in view["history"]:
                assert event["job_id"] is None and event["round"] is None
                assert scn.job_id not in event["reason"]
                assert event["at"].endswith("T00:00:00Z") or "T00:00:00" in event["at"]
        page = client.get(f"/ui/providers/{p1.id}", headers=headers).text
        assert scn.job_id not in page
    for headers in (p1.headers, scn.buyer.headers, scn.admin.headers):
        history = client.get(f"/v1/reputation/{p1.id}", headers=headers).json()["history"]
        assert {e["job_id"] for e in history} == {scn.job_id}


def test_matching_scores_reputation_on_the_app_clock(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Matching reads reputation at the service's time, not the machine's.

    Issue 11: `reputation.scores` was called without `now`, so matching aged events by the
    wall clock: a provider whose bad events had long decayed on the service's clock still
    scored as if they were fresh (or, on a clock behind, events in the future never aged).
    """
    clock.now = datetime(2031, 1, 1, tzinfo=UTC)  # ahead of the machine's own clock
    operator = admin(client)
    p = register(client, "provider")
    with _session(client) as s:
        for i in range(5):
            reputation.record(s, p.id, "invalid-submission", "bad", key=f"bad{i}", now=clock.now)
        s.commit()
    clock.advance(3 * 365 * 86400)  # 0.98**1095: the events are forgotten, score back to 0.5
    r = client.post("/v1/listings", json=listing_body(), headers=p.headers)
    assert r.status_code == 201, r.text
    buyer = register(client, "buyer")
    job_id = draft_job(client, buyer_keys, buyer, min_reputation=0.45)
    fund(client, job_id, buyer, operator, 10_000)
    offers = client.get("/v1/offers", headers=p.headers).json()
    assert [o["job_id"] for o in offers] == [job_id]
