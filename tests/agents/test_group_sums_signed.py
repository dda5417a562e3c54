"""The round-closed record covers the group sums: the server signs each released group's
members and the sha256 of its encrypted sum, and the buyer scores only sums that match.

A dishonest operator who serves the buyer other group sums (here group 0's and group 1's
swapped, so each provider's measured contribution and hence its pay is credited to the
wrong group) is refused before anything is decrypted or scored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from agents.buyer import BuyerRun, post_job
from agents.client import PollenClient
from agents.provider import ProviderAgent
from agents.trust import Trust, TrustError, register_identity
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from tests.agents.test_trust_attacks import Operator, Rewrite, _data
from tests.utils.clock import FakeClock
from tests.utils.factories import admin, job_body, register

pytestmark = pytest.mark.slow

PROVIDERS = 4


def _closed_round(
    client: TestClient, keys: BuyerKeys, tmp_path: Path
) -> tuple[str, str, IdentityKey]:
    """A signed job whose round 1 closed with 4 real agents' updates in 2 groups of 2."""
    operator = admin(client)
    buyer = register(client, "buyer")
    identity = IdentityKey.generate()
    api = PollenClient("http://testserver", buyer.api_key, http=client)
    spec = job_body(rounds=1, max_providers=PROVIDERS, min_providers=PROVIDERS, quorum=2)
    job = post_job(api, keys, spec, identity=identity)
    r = client.post(
        f"/v1/admin/jobs/{job.id}/credit",
        json={"amount_cents": spec["budget_cents"]},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    agents = []
    for i in range(PROVIDERS):
        p = register(client, "provider", f"p{i}")
        api_p = PollenClient("http://testserver", p.api_key, http=client)
        agent = ProviderAgent(
            api_p, _data(seed=i), state_dir=tmp_path / f"agent{i}", listing_name=f"p{i}",
            ask_cents=100, identity=IdentityKey.generate(), notify=lambda m: None,
        )  # fmt: skip
        agent.ensure_listing(classes=[0, 1])
        assert agent.identity is not None
        register_identity(agent.client, agent.identity, p.id)
        agents.append((agent, p.id))
    for _ in range(2):
        for agent, pid in agents:
            agent.step(pid)
    rnd = api.get_round(job.id, 1)
    assert rnd.state == "closed", rnd
    released = [g for g in rnd.groups if g.merged_into is None and g.count > 0]
    assert len(released) == 2, rnd.groups
    return str(job.id), buyer.api_key, identity


def _swap_groups(app: TestClient) -> Rewrite:
    """Serve group 0's real sum as group 1's and the reverse (valid ciphertexts both)."""

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/aggregate") and "/groups/" in path:
            index = int(path.split("/groups/")[1].split("/")[0])
            other = path.replace(f"/groups/{index}/", f"/groups/{1 - index}/")
            swapped = app.send(
                httpx.Request("GET", request.url.copy_with(path=other), headers=request.headers)
            )
            return httpx.Response(200, content=swapped.content, request=request)
        return response

    return rewrite


def test_buyer_checks_group_sums_against_the_signed_close(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    job_id, key, _ = _closed_round(client, buyer_keys, tmp_path)
    api = PollenClient("http://testserver", key, http=client)
    trust = Trust(tmp_path / "buyer" / f"{job_id}.trust.json")
    trust.check_head(api)
    sums = {g: api.get_group_aggregate(job_id, 1, g) for g in (0, 1)}
    body = trust.check_group_sums(api, job_id, 1, sums)
    assert sorted(p for g in body["groups"] for p in g["members"]) == sorted(body["included"])
    with pytest.raises(TrustError, match="is not the one the server signed"):
        trust.check_group_sums(api, job_id, 1, {0: sums[1], 1: sums[0]})
    with pytest.raises(TrustError, match="releases groups"):
        trust.check_group_sums(api, job_id, 1, {0: sums[0]})


def test_swapped_group_sums_refused_by_the_buyer_run(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """The operator swaps the two group sums it serves the buyer's run: the run refuses
    (TrustError) before scoring; an honest server's sums pass (control)."""
    job_id, key, identity = _closed_round(client, buyer_keys, tmp_path)
    honest = BuyerRun(
        PollenClient("http://testserver", key, http=client), buyer_keys, job_id,
        _data(seed=9), out_dir=tmp_path / "honest", identity=identity,
    )  # fmt: skip
    assert honest.apply_round(1).round == 1
    proxy = Operator(client, _swap_groups(client))
    run = BuyerRun(
        PollenClient("http://testserver", key, transport=proxy), buyer_keys, job_id,
        _data(seed=9), out_dir=tmp_path / "buyer", identity=identity,
    )  # fmt: skip
    with pytest.raises(TrustError, match="group 0's sum served"):
        run.apply_round(1)
    assert "group_scores" not in run.state.data or "1" not in run.state.section("group_scores")


def test_buyer_run_without_a_key_still_checks_group_sums(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """A buyer run given no identity key does not skip the checks: it makes its key on
    first use and refuses the swapped sums all the same."""
    job_id, key, _ = _closed_round(client, buyer_keys, tmp_path)
    proxy = Operator(client, _swap_groups(client))
    run = BuyerRun(
        PollenClient("http://testserver", key, transport=proxy), buyer_keys, job_id,
        _data(seed=9), out_dir=tmp_path / "buyer",
    )  # fmt: skip
    assert (tmp_path / "buyer" / "identity.key").exists()
    with pytest.raises(TrustError, match="group 0's sum served"):
        run.apply_round(1)
