"""Fair money between parties who may cheat, through the real API on both databases.

The attacks come from issue reports against the marketplace itself: a provider whose listing
and envelope claimed 5,000 samples and sent zeros took 9,314 of a 9,500 pool; a buyer
cancelled with 2 of 3 updates in and paid nobody; a buyer that never published the next
model held providers forever; three jobs with a 1-second deadline took a provider's
reputation from 0.5 to 0.125; a model of the wrong shape was accepted and broke every agent.
Contribution is measured the way group testing does (Dorfman 1943; GTG-Shapley, Liu et al.
2022): from the values of random groups' sums, never from a claim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save
from sqlmodel import Session, select

from crypto import BuyerKeys, EnvelopeBinding, decrypt_aggregate, encrypt_update
from market.models import ReputationEvent, Submission
from market.services import groups
from tests.utils.clock import FakeClock
from tests.utils.factories import model_file
from tests.utils.scenario import PARAMS, Scenario, running_job


def _engine(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.engine


def _payables(scn: Scenario) -> dict[str, int]:
    r = scn.client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    return {p["provider_id"]: p["earned_cents"] for p in r.json()["providers"]}


def _envelope(scn: Scenario, provider_id: str, number: int, value: float, samples: int) -> bytes:
    binding = EnvelopeBinding(scn.job_id, number, provider_id, PARAMS, 4)
    vector = np.full(PARAMS, value, dtype=np.float32)
    return encrypt_update(
        scn.keys.public_context(), vector, binding=binding, weight=1.0, samples=samples
    )


def test_partition_is_random_covers_everyone_and_respects_the_group_size() -> None:
    """Every provider in exactly one group, each group at least `group_size`, and the draw
    differs from round to round."""
    providers = [f"p{i}" for i in range(9)]
    draws = {tuple(map(tuple, groups.partition(providers, 2))) for _ in range(20)}
    assert len(draws) > 1
    for draw in draws:
        assert sorted(p for g in draw for p in g) == providers
        assert len(draw) == 4 and all(len(g) >= 2 for g in draw)
    assert groups.partition(["a", "b", "c"], 5) == [["a", "b", "c"]]


def test_no_released_group_sum_holds_fewer_than_group_size(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Four providers in two groups of two; one of them stays away: at the deadline its
    partner's group is merged into the other, so the buyer can decrypt a sum of three and
    never the partner's update alone."""
    scn = running_job(client, clock, buyer_keys, providers=4, max_providers=4, min_providers=4)
    rnd = scn.round(1)
    assert sorted(len(g["members"]) for g in rnd["groups"]) == [2, 2]
    absent = rnd["groups"][0]["members"][0]
    ids = {p.id: p for p in scn.providers}
    for pid in sorted(ids):
        if pid != absent:
            body = scn.envelope(ids[pid], 1, summands=4)
            assert scn.submit(ids[pid], 1, body).status_code == 201
    clock.advance(61)
    scn.tick()
    rnd = scn.round(1)
    assert rnd["state"] == "closed"
    released = [g for g in rnd["groups"] if g["merged_into"] is None and g["count"] > 0]
    assert len(released) == 1 and released[0]["count"] == 3
    url = f"/v1/jobs/{scn.job_id}/rounds/1/groups"
    agg = client.get(f"{url}/{released[0]['index']}/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 200
    assert decrypt_aggregate(buyer_keys, agg.content).count == 3
    merged = next(g for g in rnd["groups"] if g["merged_into"] is not None)
    refused = client.get(f"{url}/{merged['index']}/aggregate", headers=scn.buyer.headers)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    # A provider sees its own group's members only.
    mine = scn.round(1, ids[absent])["groups"]
    assert sum(bool(g["members"]) for g in mine) == 1


def test_a_round_smaller_than_group_size_releases_its_one_group_and_keeps_its_sum(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Groups of at least 3, quorum 2: three providers make one group, one stays away and
    the round closes at its deadline with 2. That group is the whole round, so its sum
    (the round's own sum, one blob for both) is released: it shows nothing the total does
    not. Only a group sum short of both `group_size` and the round is withheld."""
    scn = running_job(
        client, clock, buyer_keys, providers=3, max_providers=3, min_providers=3, quorum=2,
        group_size=3,
    )  # fmt: skip
    for p in scn.providers[:2]:
        assert scn.submit(p, 1, scn.envelope(p, 1, summands=3)).status_code == 201
    clock.advance(61)
    scn.tick()
    rnd = scn.round(1)
    assert rnd["state"] == "closed"
    (group,) = rnd["groups"]
    assert group["count"] == 2
    total = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert total.status_code == 200, total.text
    assert decrypt_aggregate(buyer_keys, total.content).count == 2
    url = f"/v1/jobs/{scn.job_id}/rounds/1/groups/{group['index']}/aggregate"
    agg = client.get(url, headers=scn.buyer.headers)
    assert agg.status_code == 200 and agg.content == total.content


def _score_round(scn: Scenario, number: int, good: set[str]) -> None:
    """The buyer reports each group's improvement in proportion to its `good` members (a
    freeloader's zeros dilute its group's average update)."""
    rnd = scn.round(number)
    values = []
    for g in rnd["groups"]:
        if g["merged_into"] is None and g["count"] > 0:
            share = len(good & set(g["members"])) / len(g["members"])
            values.append({"index": g["index"], "value": share})
    r = scn.client.post(
        f"/v1/jobs/{scn.job_id}/rounds/{number}/groups",
        json={"groups": values},
        headers=scn.buyer.headers,
    )
    assert r.status_code == 200, r.text


def _publish(scn: Scenario, number: int) -> None:
    r = scn.client.put(
        f"/v1/jobs/{scn.job_id}/rounds/{number}/model",
        content=model_file(PARAMS),
        headers=scn.buyer.headers,
    )
    assert r.status_code == 201, r.text


def test_pay_follows_measured_contribution_not_claims(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freeloader claiming 100× its rows gets the equal share in round 1 (no score yet,
    and its claim moves nothing); once the groups' values show that its groups help less,
    it is paid far less than the providers that do: by the last round under a quarter of
    the honest median."""
    # The draw is random in the marketplace; here it visits the three pairings of four
    # providers in turn, so the test does not depend on luck.
    draws = iter(range(100))

    def pairing(providers: list[str], size: int) -> list[list[str]]:
        a, b, c, d = sorted(providers)
        turn = next(draws) % 3
        return [[[a, b], [c, d]], [[a, c], [b, d]], [[a, d], [b, c]]][turn]

    monkeypatch.setattr(groups, "partition", pairing)
    rounds = 6
    scn = running_job(
        client, clock, buyer_keys, providers=4, max_providers=4, min_providers=4,
        rounds=rounds, budget_cents=rounds * 10_000,
    )  # fmt: skip
    ids = sorted(p.id for p in scn.providers)
    cheat = ids[0]
    actors = {p.id: p for p in scn.providers}
    for number in range(1, rounds + 1):
        for pid in ids:
            claim = 50_000 if pid == cheat else 100
            body = _envelope(scn, pid, number, 0.0 if pid == cheat else 0.01, claim)
            assert scn.submit(actors[pid], number, body).status_code == 201
        assert scn.round(number)["state"] == "closed"
        _score_round(scn, number, good=set(ids[1:]))
        if number < rounds:
            _publish(scn, number + 1)
    with Session(_engine(client)) as session:
        claimed = session.exec(
            select(Submission.samples).where(Submission.provider_id == cheat)
        ).all()
    assert set(claimed) == {500}  # clamped to the listing's count at match time
    rec = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    first, last = rec["rounds"][0]["shares"], rec["rounds"][-1]["shares"]
    assert max(first.values()) - min(first.values()) <= 1  # round 1: equal shares
    honest = sorted(last[p] for p in ids[1:])
    assert last.get(cheat, 0) <= 0.25 * honest[1], last
    # Every round's (60_000 − 5%) / 6 = 9_500 pool is paid out to the cent.
    assert sum(_payables(scn).values()) == rounds * 9_500
    # The dashboard shows each score beside the pay: all of them to the buyer, a provider
    # only its own line.
    from tests.market.test_ui import sign_in

    sign_in(client, scn.buyer)
    page = client.get(f"/ui/jobs/{scn.job_id}").text
    assert "Contribution score" in page
    table = page.split('id="contribution-h"')[1].split("</table>")[0]
    assert table.count('<tr><th scope="row">') == 4
    sign_in(client, actors[cheat])
    mine = client.get(f"/ui/jobs/{scn.job_id}").text.split('id="contribution-h"')[1]
    assert mine.split("</table>")[0].count('<tr><th scope="row">') == 1


def test_group_values_are_recorded_once_and_checked(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Values for an open round are refused (409); a report that leaves out a released group
    is refused (422); the same report again is accepted and changes nothing; a different one
    is refused (409)."""
    scn = running_job(client, clock, buyer_keys)
    url = f"/v1/jobs/{scn.job_id}/rounds/1/groups"
    body = {"groups": [{"index": 0, "value": 0.9, "loss_without": 1.0, "loss_with": 0.9}]}
    assert client.post(url, json=body, headers=scn.buyer.headers).status_code == 409
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    missing = {"groups": [{"index": 7, "value": 1.0}]}
    assert client.post(url, json=missing, headers=scn.buyer.headers).status_code == 422
    assert client.post(url, json=body, headers=scn.buyer.headers).status_code == 200
    assert client.post(url, json=body, headers=scn.buyer.headers).status_code == 200
    other = {"groups": [{"index": 0, "value": 0.1}]}
    r = client.post(url, json=other, headers=scn.buyer.headers)
    assert r.status_code == 409
    assert scn.round(1)["groups"][0]["value"] == 0.9
    provider = client.post(url, json=body, headers=scn.providers[0].headers)
    assert provider.status_code == 403


def test_cancelling_mid_round_pays_the_work_already_done(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A buyer cancelling with 2 of 3 updates in pays those two their round's pool; the rest
    is refunded; the two-update sum is never released."""
    scn = running_job(client, clock, buyer_keys, budget_cents=10_000)
    p1, p2, p3 = scn.providers
    assert scn.submit(p1, 1).status_code == 201
    assert scn.submit(p2, 1).status_code == 201
    r = client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    paid = _payables(scn)
    # pool of round 1 of 2: (10_000 − 500) // 2 = 4750, split between the two submitters
    assert paid == {p1.id: 2375, p2.id: 2375} or sorted(paid.values()) == [2375, 2375]
    assert p3.id not in paid
    rec = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    assert rec["balanced"] and rec["escrow_cents"] == 0
    assert rec["refunded_cents"] == 10_000 - 4750 - 250
    agg = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 409


def test_a_buyer_that_never_publishes_frees_the_providers(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Past the publication deadline the job fails by the buyer: the rest of the escrow is
    refunded, the providers keep what they earned and lose no reputation."""
    scn = running_job(client, clock, buyer_keys, rounds=3, publish_deadline_s=600)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    clock.advance(599)
    scn.tick()
    assert scn.job()["state"] == "running"
    clock.advance(2)
    scn.tick()
    job = scn.job()
    assert job["state"] == "failed" and "failed by the buyer" in job["failure_reason"]
    rec = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    assert rec["escrow_cents"] == 0 and rec["paid_cents"] == (10_000 - 500) // 3
    with Session(_engine(client)) as session:
        kinds = set(session.exec(select(ReputationEvent.kind)).all())
    assert kinds <= {"on-time-submission", "included"}


def test_every_provider_late_costs_no_one_reputation(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A round nobody made (the buyer's deadline, or its model) retries and fails the job
    without a single missed-deadline event against the providers."""
    scn = running_job(client, clock, buyer_keys, round_deadline_s=5)
    for _ in range(2):
        clock.advance(6)
        scn.tick()
    assert scn.job()["state"] == "failed"
    with Session(_engine(client)) as session:
        assert session.exec(select(ReputationEvent)).all() == []


def test_round_deadline_below_the_operators_minimum_is_refused(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, settings: Any
) -> None:
    """The operator's minimum round deadline bounds what a buyer may set (422, nothing made)."""
    from market import create_app

    settings.min_round_deadline_s = 30
    strict = create_app(settings)
    strict.state.clock = clock
    with TestClient(strict) as c:
        buyer = c.post("/v1/accounts", json={"role": "buyer", "name": "b"}).json()
        headers = {"Authorization": f"Bearer {buyer['api_key']}"}
        from tests.utils.factories import job_body

        r = c.post("/v1/jobs", json=job_body(round_deadline_s=1), headers=headers)
        assert r.status_code == 422 and "at least 30" in r.json()["detail"]
        assert c.get("/v1/jobs", headers=headers).json() == []


def test_a_model_of_another_layout_is_refused(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Same parameter count, other tensors: 422 naming what differs; the round is untouched."""
    scn = running_job(client, clock, buyer_keys)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    swapped = save({"a.weight": np.zeros(PARAMS, dtype=np.float32)})
    r = client.put(
        f"/v1/jobs/{scn.job_id}/rounds/2/model", content=swapped, headers=scn.buyer.headers
    )
    assert r.status_code == 422, r.text
    assert "not the job's" in r.json()["detail"]
    assert scn.round(1)["state"] == "closed" and scn.job()["current_round"] == 1
