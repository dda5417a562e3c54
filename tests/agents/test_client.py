"""The typed client against the real app: every call lands, errors come back as ApiError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from agents.client import ApiError, PollenClient
from crypto import BuyerKeys, EnvelopeBinding, decrypt_aggregate, encrypt_update
from dataspec.views import AccountPublic, SubmissionReceipt
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, job_body, listing_body, model_file
from tests.utils.scenario import dead_upload_claim, running_job

PARAMS = 200


def _as(client: TestClient, key: str | None) -> PollenClient:
    return PollenClient("http://testserver", key, http=client)


def test_full_job_through_the_client(
    client: TestClient, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Register, list, post, fund, match, accept, submit, aggregate, publish, complete."""
    anon = _as(client, None)
    admin = _as(client, ADMIN_KEY)
    buyer = _as(client, anon.register(role="buyer", name="b").api_key)
    created = [anon.register(role="provider", name=f"p{i}") for i in range(2)]
    for acct in created:
        assert admin.approve_provider(acct.id).verified_at is not None
    providers = [_as(client, acct.api_key) for acct in created]
    for p in providers:
        listing = p.create_listing(listing_body())
        sent = listing_body()["schema"]  # read back with the defaults stated (no gaps)
        stated = {**sent, "features": [{**f, "missing": False} for f in sent["features"]]}
        assert p.get_listing(listing.id).dataset_schema.model_dump(exclude_none=True) == stated
        assert p.update_listing(listing.id, {"ask_cents": 90}).ask_cents == 90
    job = buyer.create_job(job_body(rounds=1, max_providers=2))
    ctx_file = tmp_path / "ctx.bin"
    ctx_file.write_bytes(buyer_keys.public_context().to_bytes())
    buyer.put_context(job.id, ctx_file)  # streamed from disk
    assert buyer.put_model(job.id, model_file(PARAMS)).param_count == PARAMS
    assert buyer.fund_job(job.id).state == "funding"
    assert admin.credit_job(job.id, 10_000, reference="wire-1").job_state == "open"
    for p in providers:
        (offer,) = p.list_offers()
        p.accept_offer(offer.id)
    assert buyer.get_job(job.id).state == "running"
    ctx = buyer_keys.public_context()
    for p in providers:
        me = p.me().id
        assert p.get_context(job.id) == ctx.to_bytes()
        assert p.get_round_model(job.id, 1) == model_file(PARAMS)
        rnd = p.get_round(job.id, 1)
        binding = EnvelopeBinding(job.id, 1, me, PARAMS, rnd.summands)
        env = encrypt_update(
            ctx, np.ones(PARAMS, np.float32), binding=binding, weight=1.0, samples=10
        )
        receipt = p.submit(job.id, 1, env)
        with pytest.raises(ApiError) as dup:
            p.submit(job.id, 1, env)
        assert dup.value.status == 409 and dup.value.code == "duplicate-submission"
        assert SubmissionReceipt.model_validate(dup.value.body["first"]) == receipt
    agg = decrypt_aggregate(buyer_keys, buyer.get_aggregate(job.id, 1))
    np.testing.assert_allclose(agg.total, np.full(PARAMS, 2.0), atol=1e-3)
    buyer.post_metrics(job.id, 1, {"loss": 0.3, "accuracy": 0.8})
    buyer.put_final_model(job.id, model_file(PARAMS, seed=9))
    assert buyer.complete_job(job.id).state == "completed"
    assert providers[0].get_final_model(job.id) == model_file(PARAMS, seed=9)
    assert [j.id for j in buyer.list_jobs()] == [job.id]
    assert admin.tick().rounds_checked == 0


def test_errors_are_typed(client: TestClient) -> None:
    """A refused call raises ApiError with the problem's status, code and detail."""
    anon = _as(client, None)
    with pytest.raises(ApiError) as exc:
        anon.me()
    assert (exc.value.status, exc.value.code) == (401, "unauthenticated")
    buyer = _as(client, anon.register(role="buyer", name="b").api_key)
    with pytest.raises(ApiError) as exc:
        buyer.create_job(job_body(quorum=1))
    assert exc.value.status == 422 and exc.value.code == "validation-error"
    with pytest.raises(ApiError) as exc:
        buyer.get_job("job_missing")
    assert exc.value.status == 404 and "job_missing" in exc.value.detail


def test_non_problem_error_bodies_still_raise() -> None:
    """A proxy's HTML error page becomes an ApiError too, not a JSON crash."""
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway"))
    with (
        PollenClient("http://pollen.invalid", "k", transport=transport) as c,
        pytest.raises(ApiError) as exc,
    ):
        c.list_offers()
    assert exc.value.status == 502 and "bad gateway" in exc.value.detail


def test_sends_the_bearer_key() -> None:
    """The API key travels as a bearer token on every request."""
    seen: list[httpx.Request] = []
    me = {"id": "byr_1", "role": "buyer", "name": "b", "created_at": "2026-01-01T00:00:00Z"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=me)

    with PollenClient(
        "http://pollen.invalid/", "pk_x", transport=httpx.MockTransport(handler)
    ) as c:
        assert c.me() == AccountPublic.model_validate(me)
    assert seen[0].headers["authorization"] == "Bearer pk_x"
    assert str(seen[0].url) == "http://pollen.invalid/v1/accounts/me"


def test_submit_waits_out_an_upload_left_by_a_dead_server(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider whose earlier upload's claim outlived a killed server waits as told (409
    `upload-in-progress`, Retry-After) and sends again: the agent neither fails nor gives up,
    and the update lands once."""
    scn = running_job(client, clock, buyer_keys)
    provider = scn.providers[0]
    app: Any = client.app
    dead_upload_claim(client, scn.job_id, provider.id, clock.now)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr("agents.client.time.sleep", sleep)
    receipt = _as(client, provider.api_key).submit(scn.job_id, 1, scn.envelope(provider, 1))
    assert receipt.round == 1
    assert app.state.settings.upload_idle_timeout_s <= sum(slept) <= 40
