"""A dishonest operator against real agents: key substitution, a swapped model, a forged
identity key. Each attack is a proxy in front of the real server that alters its answers
(the operator controls every byte the API serves); the agents must refuse and send nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from agents.buyer import post_job
from agents.client import PollenClient
from agents.data import Dataset
from agents.provider import ProviderAgent
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from tests.utils.clock import FakeClock
from tests.utils.factories import SCHEMA, admin, job_body, register

Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Operator(httpx.BaseTransport):
    """The server as a dishonest operator runs it: answers pass through `rewrite`."""

    def __init__(self, app: TestClient, rewrite: Rewrite | None = None) -> None:
        self.app = app
        self.rewrite = rewrite
        self.submissions: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/submission"):
            self.submissions.append(request)
        answer = self.app.send(request)
        response = httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content, request=request
        )
        return self.rewrite(request, response) if self.rewrite else response


def _data(n: int = 80, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(20, 80, n), rng.normal(25, 4, n), rng.normal(100, 20, n)])
    names = [f["name"] for f in SCHEMA["features"]]
    return Dataset(X, rng.integers(0, 2, n), names, SCHEMA["label"]["name"])


def _swap(path_end: str, content: bytes) -> Rewrite:
    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith(path_end):
            return httpx.Response(200, content=content, request=request)
        return response

    return rewrite


def _market(
    client: TestClient, keys: BuyerKeys, tmp_path: Path, rewrite: Rewrite | None = None,
    trust_buyer: str | None = None, keyless: bool = False,
) -> tuple[str, IdentityKey, list[ProviderAgent], Operator, list[str]]:  # fmt: skip
    """A signed, funded job and two agents (behind `rewrite`) that accepted it; `keyless`
    agents are given no identity key (they make and register their own)."""
    operator = admin(client)
    buyer = register(client, "buyer")
    buyer_id = IdentityKey.generate()
    api = PollenClient("http://testserver", buyer.api_key, http=client)
    spec = job_body(rounds=1, max_providers=2, min_providers=2)
    job = post_job(api, keys, spec, identity=buyer_id)
    r = client.post(
        f"/v1/admin/jobs/{job.id}/credit",
        json={"amount_cents": spec["budget_cents"]},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    proxy = Operator(client, rewrite)
    agents, ids = [], []
    for i in range(2):
        p = register(client, "provider", f"p{i}")
        api_p = PollenClient("http://testserver", p.api_key, transport=proxy)
        agent = ProviderAgent(
            api_p, _data(seed=i), state_dir=tmp_path / f"agent{i}", listing_name=f"p{i}",
            ask_cents=100, identity=None if keyless else IdentityKey.generate(),
            trust_buyer=trust_buyer, notify=lambda m: None,
        )  # fmt: skip
        agent.ensure_listing(classes=[0, 1])
        agents.append(agent)
        ids.append(p.id)
    for agent, pid in zip(agents, ids, strict=True):
        from agents.trust import register_identity

        if not keyless:
            register_identity(agent.client, agent.identity, pid)
    for agent, pid in zip(agents, ids, strict=True):
        agent.step(pid)
    return str(job.id), buyer_id, agents, proxy, ids


def _work(agents: list[ProviderAgent], ids: list[str]) -> None:
    for agent, pid in zip(agents, ids, strict=True):
        agent.step(pid)


def test_honest_operator_agents_submit_signed_updates(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Control: with nothing altered both agents verify, submit signed envelopes and keep
    the server's signed receipts."""
    job_id, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path)
    _work(agents, ids)
    assert len(proxy.submissions) == 2
    assert all(s.headers.get("pollen-signature") for s in proxy.submissions)
    for agent in agents:
        assert agent.trust is not None
        (receipt,) = agent.trust.data["receipts"]
        assert receipt["record"]["kind"] == "accepted"
    r = client.get(f"/v1/jobs/{job_id}/rounds/1", headers={})
    assert r.status_code in (200, 401)


def test_key_substitution_refused_and_nothing_sent(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Issue 14 (a), key substitution (the attack certificate pinning and CT exist for,
    cf. DigiNotar 2011): the operator serves its own public context; the agent compares its
    fingerprint with the buyer-signed manifest, refuses loudly and sends no update."""
    operator_keys = BuyerKeys.generate()
    rewrite = _swap("/context", operator_keys.public_context().to_bytes())
    job_id, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path, rewrite)
    _work(agents, ids)
    assert proxy.submissions == []
    for agent in agents:
        entry = agent.state.section("jobs")[job_id]
        assert "key substitution" in entry["refused"]


def test_other_model_served_to_one_provider_refused(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Issue 14 (c): the operator serves one provider a different global model (a
    split-view attack, what CT's gossip of signed heads is against); the buyer signed the
    model's hash in its manifest, so that agent refuses to train and sends nothing."""
    from tests.utils.factories import model_file

    victim: list[str] = []

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        # The first provider to download the model is the one shown another.
        if request.method == "GET" and request.url.path.endswith("/rounds/1/model"):
            auth = request.headers.get("authorization", "")
            victim[:] = victim or [auth]
            if auth == victim[0]:
                return httpx.Response(200, content=model_file(10), request=request)
        return response

    job_id, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path, rewrite)
    _work(agents, ids)
    (shown,) = [a for a in agents if f"Bearer {a.client.api_key}" == victim[0]]
    (other,) = [a for a in agents if a is not shown]
    assert "refusing to train" in shown.state.section("jobs")[job_id]["refused"]
    # The other provider, shown the signed model, submitted; the victim sent nothing.
    assert [s.headers["authorization"] for s in proxy.submissions] == [
        f"Bearer {other.client.api_key}"
    ]
    assert "refused" not in other.state.section("jobs")[job_id]


def test_substituted_buyer_identity_refused_with_trust_buyer(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """A smarter operator swaps the buyer's identity key too (and re-signs a manifest with
    its own): an agent told `--trust-buyer FINGERPRINT` refuses the substituted key."""
    trusted = IdentityKey.generate().fingerprint  # the fingerprint the buyer told us
    job_id, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path, trust_buyer=trusted)
    _work(agents, ids)
    assert proxy.submissions == []
    for agent in agents:
        assert "key substitution" in agent.state.section("jobs")[job_id]["refused"]


def test_agent_without_a_key_makes_one_and_still_refuses(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """An agent given no identity key does not skip the checks: it makes its key on first
    use (0600, in its state directory), registers it, and refuses the substituted context
    exactly as a keyed agent does, sending nothing."""
    import stat

    operator_keys = BuyerKeys.generate()
    rewrite = _swap("/context", operator_keys.public_context().to_bytes())
    job_id, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path, rewrite, keyless=True)
    _work(agents, ids)
    assert proxy.submissions == []
    for i, (agent, pid) in enumerate(zip(agents, ids, strict=True)):
        assert "key substitution" in agent.state.section("jobs")[job_id]["refused"]
        key_file = tmp_path / f"agent{i}" / "identity.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {agent.client.api_key}"}
        served = client.get(f"/v1/accounts/{pid}/identity", headers=auth).json()
        assert served["fingerprint"] == agent.identity.fingerprint
        assert agent.trust.data["registered"] == [pid, agent.identity.fingerprint]


def test_agent_without_a_key_works_for_an_honest_buyer(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Control: keyless agents, nothing altered: they sign their envelopes with the key
    they made and keep the server's signed receipts."""
    _, _, agents, proxy, ids = _market(client, buyer_keys, tmp_path, keyless=True)
    _work(agents, ids)
    assert len(proxy.submissions) == 2
    assert all(s.headers.get("pollen-signature") for s in proxy.submissions)
    for agent in agents:
        (receipt,) = agent.trust.data["receipts"]
        assert receipt["record"]["kind"] == "accepted"


class LostAnswer(Operator):
    """The network drops the answer to the first submission the server accepted; with
    `hide`, the round view also says nothing was received (a stale cache, or an operator
    inviting a second copy) and that the round still collects (the answer closed it), so
    the agent sends the update again."""

    def __init__(self, app: TestClient, *, hide: bool) -> None:
        super().__init__(app)
        self.dropped = 0
        self.hide = hide

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        path = request.url.path
        if (
            request.method == "PUT"
            and path.endswith("/submission")
            and (self.dropped == 0 and response.status_code == 201)
        ):
            self.dropped += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        if self.hide and request.method == "GET" and path.endswith("/rounds/1"):
            body = response.json()
            body["you_submitted"], body["state"] = False, "collecting"
            return httpx.Response(200, json=body, request=request)
        return response


def test_a_lost_answer_to_an_accepted_upload_is_recorded_once(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """The server accepted the update but its answer never arrived. The agent records the
    round as submitted and never counts twice: told the round neither holds its update nor
    has closed, it sends it again, is refused as a duplicate with the first signed receipt,
    checks that receipt and keeps it (the duplicate's answer once broke the agent on every
    step: it read the receipt as a dict)."""
    job_id, _, agents, _, ids = _market(client, buyer_keys, tmp_path)
    lost = LostAnswer(client, hide=True)
    agents[0].client = PollenClient("http://testserver", agents[0].client.api_key, transport=lost)
    for _ in range(3):
        try:
            agents[0].step(ids[0])
        except httpx.TransportError:
            continue  # the step that lost its answer; the next one goes on
    assert lost.dropped == 1
    assert len(lost.submissions) == 2  # the lost one and the duplicate
    assert "1" in agents[0].state.data["jobs"][job_id]["submitted"]
    assert agents[0].trust is not None
    (receipt,) = agents[0].trust.data["receipts"]
    assert receipt["record"]["kind"] == "accepted"


def test_a_lost_answer_to_the_update_that_closed_the_round_is_still_recorded(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """The answer lost is the one to the round's last expected update: accepting it closed
    the round. The agent's next step sees a round no longer collecting; it still sends the
    envelope left on disk again, gets the first signed receipt back as a duplicate, checks
    and keeps it, records the round as sent and deletes the envelope. (Before, the agent
    skipped a round that no longer collects: the round stayed unrecorded, no receipt was
    kept and the envelope stayed on disk.)"""
    job_id, _, agents, _, ids = _market(client, buyer_keys, tmp_path)
    lost = LostAnswer(client, hide=False)
    agents[0].client = PollenClient("http://testserver", agents[0].client.api_key, transport=lost)
    # Agent 1's update is in since the job started; agent 0's is the last one expected.
    with pytest.raises(httpx.TransportError):
        agents[0].step(ids[0])
    assert agents[1].client.get_round(job_id, 1).state == "closed"
    agents[0].step(ids[0])
    entry = agents[0].state.data["jobs"][job_id]
    assert entry["submitted"].get("1") not in (None, "accepted-earlier")
    assert len(lost.submissions) == 2  # the lost one and the duplicate
    assert agents[0].trust is not None
    (receipt,) = agents[0].trust.data["receipts"]
    assert receipt["record"]["kind"] == "accepted"
    assert not list((tmp_path / "agent0" / "envelopes").glob("*.bin"))
