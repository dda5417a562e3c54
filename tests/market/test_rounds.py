"""The round state machine: all-in, deadline with quorum, the retry rule, job failure,
offers that expire or are declined, and the order of model publications."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.factories import listing_body, model_file, register
from tests.utils.scenario import Scenario, open_job, running_job


def _job_round(client: TestClient, clock: FakeClock, keys: BuyerKeys, **spec: object) -> Scenario:
    return running_job(client, clock, keys, round_deadline_s=1, **spec)


def test_round_closes_when_every_provider_submitted(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Quorum alone does not close a round early; the last expected update does."""
    scn = _job_round(client, clock, buyer_keys)
    p1, p2, p3 = scn.providers
    assert scn.submit(p1, 1).status_code == 201
    assert scn.submit(p2, 1).status_code == 201
    assert scn.round(1)["state"] == "collecting"
    assert scn.submit(p3, 1).status_code == 201
    rnd = scn.round(1)
    assert (rnd["state"], rnd["close_reason"], rnd["submitted"]) == ("closed", "all-in", 3)


def test_deadline_with_quorum_closes_the_round(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """At the deadline, a round holding at least quorum updates closes with those updates."""
    scn = _job_round(client, clock, buyer_keys)
    p1, p2, p3 = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    clock.advance(2)
    scn.tick()
    rnd = scn.round(1)
    assert (rnd["state"], rnd["close_reason"]) == ("closed", "deadline")
    assert rnd["included"] == sorted([p1.id, p2.id])
    late = scn.submit(p3, 1)
    assert late.status_code == 409 and late.json()["code"] == "round-not-collecting"
    agg = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 200


def test_deadline_is_enforced_lazily_without_a_tick(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A late upload is refused even if the background pass has not run yet."""
    scn = _job_round(client, clock, buyer_keys)
    p1, p2, p3 = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    clock.advance(2)
    assert scn.submit(p3, 1).status_code == 409
    assert scn.round(1)["submitted"] == 2


def test_below_quorum_retries_once_with_rematched_providers(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Below quorum at the deadline: attempt 2 keeps the submission, drops the silent
    providers and fills their places through matching; the round then closes normally."""
    scn = _job_round(client, clock, buyer_keys)
    p1, p2, _p3 = scn.providers
    newcomer = register(client, "provider", "newcomer")
    client.post("/v1/listings", json=listing_body(), headers=newcomer.headers)
    assert scn.offers(newcomer) == []  # the job was full
    assert scn.submit(p1, 1).status_code == 201
    clock.advance(2)
    scn.tick()
    rnd = scn.round(1)
    assert (rnd["state"], rnd["attempt"], rnd["submitted"]) == ("collecting", 2, 1)
    assert rnd["expected_providers"] == [p1.id]
    assert scn.submit(p2, 1).status_code == 403  # dropped from the job
    assert client.get(f"/v1/jobs/{scn.job_id}/context", headers=p2.headers).status_code == 403
    assert scn.accept(newcomer).status_code == 200
    assert scn.round(1)["expected_providers"] == sorted([p1.id, newcomer.id])
    assert scn.submit(newcomer, 1).status_code == 201
    rnd = scn.round(1)
    assert (rnd["state"], rnd["attempt"], rnd["submitted"]) == ("closed", 2, 2)


def test_second_miss_fails_the_job(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Still below quorum after the retry: the round and the job fail; no aggregate leaks."""
    scn = _job_round(client, clock, buyer_keys)
    scn.submit(scn.providers[0], 1)
    clock.advance(2)
    scn.tick()
    clock.advance(2)
    scn.tick()
    job = scn.job()
    assert job["state"] == "failed" and "quorum" in job["failure_reason"]
    assert job["rounds"][0]["state"] == "failed"
    agg = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 409 and agg.json()["code"] == "aggregate-unavailable"


def test_aggregate_needs_a_closed_round(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The buyer cannot read a collecting round's sum, even with quorum reached."""
    scn = _job_round(client, clock, buyer_keys)
    scn.submit(scn.providers[0], 1)
    scn.submit(scn.providers[1], 1)
    agg = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 409


def test_model_publication_order(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Round r+1's model needs round r closed, the same parameter count, and r+1 ≤ rounds."""
    scn = _job_round(client, clock, buyer_keys, rounds=2)
    url = f"/v1/jobs/{scn.job_id}/rounds/2/model"
    assert client.put(url, content=model_file(), headers=scn.buyer.headers).status_code == 409
    for p in scn.providers:
        scn.submit(p, 1)
    bad = client.put(url, content=model_file(param_count=7), headers=scn.buyer.headers)
    assert bad.status_code == 422
    too_far = f"/v1/jobs/{scn.job_id}/rounds/3/model"
    assert client.put(too_far, content=model_file(), headers=scn.buyer.headers).status_code == 409
    r = client.put(url, content=model_file(seed=3), headers=scn.buyer.headers)
    assert r.status_code == 201 and r.json()["state"] == "collecting"
    assert scn.round(1)["state"] == "published"
    got = client.get(f"/v1/jobs/{scn.job_id}/rounds/2/model", headers=scn.providers[0].headers)
    assert got.content == model_file(seed=3)
    done = client.post(f"/v1/jobs/{scn.job_id}/complete", headers=scn.buyer.headers)
    assert done.status_code == 409  # round 2 is still collecting


def test_job_starts_at_min_providers(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The job stays open until min_providers accepted, then round 1 collects at once."""
    scn = open_job(client, clock, buyer_keys, providers=3, accept=0, min_providers=2)
    assert scn.job()["state"] == "open"
    assert scn.accept(scn.providers[0]).status_code == 200
    assert scn.job()["state"] == "open"
    assert scn.accept(scn.providers[1]).status_code == 200
    job = scn.job()
    assert job["state"] == "running" and job["rounds"][0]["state"] == "collecting"
    assert scn.accept(scn.providers[2]).status_code == 200  # joins the collecting round
    assert scn.round(1)["expected_count"] == 3


def test_expired_offer_cannot_be_accepted_and_is_rematched(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """After its TTL an offer is refused (409), and the tick offers the place to another."""
    scn = open_job(client, clock, buyer_keys, providers=3, accept=0, max_providers=2)
    late = next(p for p in scn.providers if scn.offers(p))
    spare = next(p for p in scn.providers if not scn.offers(p))
    clock.advance(301)
    r = scn.accept(late)
    assert r.status_code == 409 and r.json()["code"] == "offer-expired"
    scn.tick()
    assert [o["state"] for o in scn.offers(spare)] == ["pending"]


def test_declined_offer_goes_to_the_next_listing(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A decline frees the slot and matching offers it to a provider not yet asked."""
    scn = open_job(client, clock, buyer_keys, providers=3, accept=0, max_providers=2)
    asked = [p for p in scn.providers if scn.offers(p)]
    spare = next(p for p in scn.providers if not scn.offers(p))
    (offer,) = scn.offers(asked[0])
    r = client.post(f"/v1/offers/{offer['id']}/decline", headers=asked[0].headers)
    assert r.status_code == 200 and r.json()["state"] == "declined"
    assert [o["state"] for o in scn.offers(spare)] == ["pending"]
    again = client.post(f"/v1/offers/{offer['id']}/accept", headers=asked[0].headers)
    assert again.status_code == 409


def test_cancel_stops_everything(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A cancelled job refuses uploads and cannot be cancelled twice."""
    scn = _job_round(client, clock, buyer_keys)
    r = client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert r.status_code == 200 and r.json()["rounds"][0]["state"] == "cancelled"
    assert scn.submit(scn.providers[0], 1).status_code == 409
    again = client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert again.status_code == 409


def test_background_task_enforces_deadlines(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The server's own periodic pass closes an overdue round, with no request touching it."""
    scn = _job_round(client, clock, buyer_keys)
    scn.submit(scn.providers[0], 1)
    scn.submit(scn.providers[1], 1)
    app = client.app
    app.state.settings.deadline_tick_s = 0.05  # type: ignore[attr-defined]
    # The task is started at startup; restart the app's lifespan with the short period.
    with TestClient(app) as fresh:
        clock.advance(2)
        for _ in range(100):
            if scn.job()["rounds"][0]["state"] == "closed":
                break
            time.sleep(0.05)
        assert fresh is not None
    assert scn.job()["rounds"][0]["state"] == "closed"


@pytest.mark.parametrize(("drop", "expected"), [(True, 2), (False, 3)])
def test_a_provider_that_missed_a_round_is_not_waited_for_again(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, drop: bool, expected: int
) -> None:
    """One gone provider costs one deadline: round 2 waits only for those who sent round 1,
    and closes all-in; with `drop_missed: false` it waits for everyone again."""
    scn = _job_round(client, clock, buyer_keys, rounds=2, drop_missed=drop)
    p1, p2, _ = scn.providers
    scn.submit(p1, 1)
    scn.submit(p2, 1)
    clock.advance(2)
    scn.tick()
    url = f"/v1/jobs/{scn.job_id}/rounds/2/model"
    assert client.put(url, content=model_file(), headers=scn.buyer.headers).status_code == 201
    assert len(scn.round(2)["expected_providers"]) == expected
    scn.submit(p1, 2)
    scn.submit(p2, 2)
    rnd = scn.round(2)
    if drop:
        assert (rnd["state"], rnd["close_reason"]) == ("closed", "all-in")
    else:
        assert rnd["state"] == "collecting"
