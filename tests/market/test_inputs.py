"""Bad inputs on listings, jobs, contexts, models and funding: 4xx problem+json, no change."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from crypto import BuyerKeys, envelope_size
from market import Settings, create_app
from tests.utils.clock import FakeClock
from tests.utils.factories import (
    ADMIN_KEY,
    SCHEMA,
    Actor,
    admin,
    job_body,
    listing_body,
    model_file,
    register,
)
from tests.utils.scenario import PARAMS, draft_job, open_job, running_job
from tests.utils.snapshot import snapshot


def _refused(
    client: TestClient, method: str, url: str, actor: Actor, status: int, **kw: Any
) -> dict[str, Any]:
    before = snapshot(client)
    r = client.request(method, url, headers=actor.headers, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert snapshot(client) == before
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    return body


@pytest.mark.parametrize(
    "over",
    [
        {"rows": [[1, 2, 3]]},  # no field can carry data
        {"schema": {**SCHEMA, "rows": [[1.0, 2.0]]}},
        {"schema": {**SCHEMA, "features": [{"name": "has space", "type": "float"}]}},
        {
            "schema": {
                **SCHEMA,
                "features": [{"name": f"f{i}", "type": "float"} for i in range(1025)],
            }
        },
        {"schema": {**SCHEMA, "features": [{"name": "a", "type": "str"}]}},
        {"samples": 0},
        {"ask_cents": -1},
        {"ask_cents": 1.5},
        {"currency": "US Dollars"},
    ],
)
def test_listing_bodies_are_strict(client: TestClient, over: dict[str, Any]) -> None:
    """Unknown fields, bad names, too many features and bad numbers are refused with 422."""
    provider = register(client, "provider")
    body = _refused(client, "POST", "/v1/listings", provider, 422, json=listing_body(**over))
    assert body["code"] == "validation-error"


@pytest.mark.parametrize(
    "over",
    [
        {"quorum": 1},
        {"min_providers": 5, "max_providers": 3},
        {"quorum": 3, "min_providers": 2},
        {"model": {"arch": "transformer"}},
        {"model": {"arch": "logreg", "hidden": [4]}},
        {"model": {"arch": "mlp", "hidden": []}},
        {"budget_cents": 0},
        {"learning_rate": 0},
        {"pickle": "gASVAAAAAAAAAAA="},
        {"preset": "no-such-preset"},
        {"max_providers": 100_000},
    ],
)
def test_job_specs_are_validated(client: TestClient, over: dict[str, Any]) -> None:
    """Incoherent or unknown job specs are refused with 422 and create nothing."""
    buyer = register(client, "buyer")
    _refused(client, "POST", "/v1/jobs", buyer, 422, json=job_body(**over))


def test_context_checks(client: TestClient, buyer_keys: BuyerKeys, tmp_path: Path) -> None:
    """Garbage and secret-key contexts are refused; a funded job's context is frozen."""
    buyer = register(client, "buyer")
    job = draft_job(client, buyer_keys, buyer)
    url = f"/v1/jobs/{job}/context"
    assert (
        _refused(client, "PUT", url, buyer, 422, content=b"\x00garbage")["code"]
        == "invalid-context"
    )
    buyer_keys.save(tmp_path / "secret.key")
    secret_file = (tmp_path / "secret.key").read_bytes()
    secret_body = secret_file.partition(b"\n")[2]
    _refused(client, "PUT", url, buyer, 422, content=secret_file)
    assert (
        _refused(client, "PUT", url, buyer, 422, content=secret_body)["code"] == "invalid-context"
    )
    assert client.post(f"/v1/jobs/{job}/fund", headers=buyer.headers).status_code == 200
    ctx = buyer_keys.public_context().to_bytes()
    _refused(client, "PUT", url, buyer, 409, content=ctx)


def test_model_checks(client: TestClient) -> None:
    """Only safetensors of floats are accepted: pickles and integer tensors are refused."""
    buyer = register(client, "buyer")
    job = client.post("/v1/jobs", json=job_body(), headers=buyer.headers).json()["id"]
    url = f"/v1/jobs/{job}/model"
    _refused(client, "PUT", url, buyer, 422, content=pickle.dumps({"w": [1.0, 2.0]}))
    _refused(client, "PUT", url, buyer, 422, content=save({"w": np.arange(4, dtype=np.int64)}))
    _refused(client, "PUT", url, buyer, 422, content=b"")
    _refused(client, "POST", f"/v1/jobs/{job}/fund", buyer, 409)  # nothing uploaded yet


def test_upload_limits(tmp_path: Path, buyer_keys: BuyerKeys) -> None:
    """Contexts and models beyond their configured size are cut off with 413."""
    settings = Settings(
        data_dir=tmp_path, deadline_tick_s=0, max_context_bytes=1000, max_model_bytes=100
    )
    with TestClient(create_app(settings)) as client:
        buyer = register(client, "buyer")
        job = client.post("/v1/jobs", json=job_body(), headers=buyer.headers).json()["id"]
        ctx = buyer_keys.public_context().to_bytes()
        _refused(client, "PUT", f"/v1/jobs/{job}/context", buyer, 413, content=ctx)
        model = save({"w": np.zeros(100, np.float32)})
        _refused(client, "PUT", f"/v1/jobs/{job}/model", buyer, 413, content=model)


def test_credit_is_idempotent_by_reference(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Crediting twice with one reference counts once; reusing it for another amount is 409."""
    operator = admin(client)
    buyer = register(client, "buyer")
    job = draft_job(client, buyer_keys, buyer, budget_cents=1000)
    url = f"/v1/admin/jobs/{job}/credit"
    assert client.post(url, json={"amount_cents": 10}, headers=operator.headers).status_code == 409
    client.post(f"/v1/jobs/{job}/fund", headers=buyer.headers)
    first = client.post(
        url, json={"amount_cents": 400, "reference": "w1"}, headers=operator.headers
    )
    again = client.post(
        url, json={"amount_cents": 400, "reference": "w1"}, headers=operator.headers
    )
    assert first.json() == again.json()
    assert client.get(f"/v1/jobs/{job}", headers=buyer.headers).json()["funded_cents"] == 400
    _refused(client, "POST", url, operator, 409, json={"amount_cents": 5, "reference": "w1"})
    opened = client.post(url, json={"amount_cents": 600}, headers=operator.headers).json()
    assert (opened["funded_cents"], opened["job_state"]) == (1000, "open")


def test_listing_change_triggers_matching(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """An open job that found no listing gets an offer as soon as a listing qualifies."""
    scn = open_job(client, clock, buyer_keys, providers=0, min_samples=1000)
    provider = register(client, "provider")
    listing = client.post(
        "/v1/listings", json=listing_body(samples=10), headers=provider.headers
    ).json()
    assert scn.offers(provider) == []
    r = client.patch(
        f"/v1/listings/{listing['id']}", json={"samples": 2000}, headers=provider.headers
    )
    assert r.status_code == 200
    assert [o["samples"] for o in scn.offers(provider)] == [2000]
    gone = client.delete(f"/v1/listings/{listing['id']}", headers=provider.headers)
    assert gone.json()["state"] == "withdrawn"
    assert [o["state"] for o in scn.offers(provider)] == ["withdrawn"]


def test_unknown_paths_and_methods_are_problems(client: TestClient) -> None:
    """404 and 405 from routing come back as problem+json too."""
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = client.delete("/v1/accounts/me")
    assert r.status_code == 405 and r.json()["code"] == "method-not-allowed"
    r = client.get("/v1/accounts/me", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


def test_nul_bytes_are_refused_not_crashed_on(client: TestClient) -> None:
    """Ids and text holding NUL get 404/422 on every backend (PostgreSQL answered 500)."""
    buyer = register(client, "buyer")
    provider = register(client, "provider")
    operator = admin(client)
    for method, url, actor in [
        ("GET", "/v1/jobs/job%00x", buyer),
        ("GET", "/v1/jobs/job%00x/rounds/1", buyer),
        ("PUT", "/v1/jobs/job%00x/rounds/1/submission", provider),
        ("GET", "/v1/listings/lst%00x", provider),
        ("POST", "/v1/offers/off%00x/accept", provider),
        ("POST", "/v1/admin/jobs/job%00x/credit", operator),
        ("POST", "/v1/admin/payouts/pob%00x/mark-paid", operator),
    ]:
        kw: dict[str, Any] = {"json": {"amount_cents": 5}} if "credit" in url else {}
        _refused(client, method, url, actor, 404, **kw)
    r = client.get("/v1/reputation/prv%00x")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    _refused(client, "POST", "/v1/listings", provider, 422, json=listing_body(name="a\x00b"))
    _refused(client, "POST", "/v1/jobs", buyer, 422, json=job_body(title="a\x00b"))
    schema = {**SCHEMA, "label": {"name": "y", "classes": [0, 1], "x\x00": 1}}
    _refused(client, "POST", "/v1/listings", provider, 422, json=listing_body(schema=schema))
    r = client.post("/v1/accounts", json={"role": "buyer", "name": "a\x00b"})
    assert r.status_code == 422 and r.json()["code"] == "validation-error"


def test_upload_limits_on_model_and_submission_routes(
    tmp_path: Path, buyer_keys: BuyerKeys
) -> None:
    """Final and round models beyond `max_model_bytes`, and envelopes beyond the largest
    valid one, declared or streamed without a length, are cut off with 413."""
    limit = len(model_file()) + 64
    settings = Settings(
        data_dir=tmp_path, deadline_tick_s=0, admin_api_key=ADMIN_KEY, max_model_bytes=limit
    )
    clock = FakeClock()
    app = create_app(settings)
    app.state.clock = clock
    with TestClient(app) as client:
        scn = running_job(client, clock, buyer_keys)
        big = model_file(param_count=2000)
        assert len(big) > limit
        job = f"/v1/jobs/{scn.job_id}"
        _refused(client, "PUT", f"{job}/final-model", scn.buyer, 413, content=big)
        _refused(client, "PUT", f"{job}/rounds/2/model", scn.buyer, 413, content=big)
        p0 = scn.providers[0]
        envelope = scn.envelope(p0, 1)
        oversize = envelope + b"\x00" * (
            envelope_size(buyer_keys.public_context().preset, PARAMS) + 1
        )
        url = f"{job}/rounds/1/submission"
        body = _refused(client, "PUT", url, p0, 413, content=oversize)
        assert body["code"] == "payload-too-large"
        streamed = (oversize[i : i + 65536] for i in range(0, len(oversize), 65536))
        _refused(client, "PUT", url, p0, 413, content=streamed)
        assert scn.submit(p0, 1, envelope).status_code == 201
