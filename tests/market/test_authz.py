"""Authorization matrix: every endpoint x caller, with the expected status, and no state
change whenever the call is refused."""

# ruff: noqa: E501  (the matrix reads best as one row per endpoint)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.factories import Actor, job_body, listing_body, model_file, register
from tests.utils.scenario import Scenario, draft_job, open_job
from tests.utils.snapshot import snapshot

ANON = Actor("anonymous", "anonymous", "")
ROLES = ("anon", "owner", "other_buyer", "accepted", "pending", "other_provider", "admin")


@dataclass
class World:
    scn: Scenario
    actors: dict[str, Actor]
    ids: dict[str, str]


@pytest.fixture
def world(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> World:
    """A running job (3 accepted providers, a 4th with a pending offer), a draft job of the
    same buyer, another buyer and a provider with no offer at all."""
    scn = open_job(client, clock, buyer_keys, providers=4, accept=3, max_providers=4)
    assert scn.job()["state"] == "running"
    accepted, pending = scn.providers[0], scn.providers[3]
    other_provider = register(client, "provider", "outsider")
    client.post("/v1/listings", json=listing_body(), headers=other_provider.headers)
    r = client.put(
        f"/v1/jobs/{scn.job_id}/final-model", content=model_file(), headers=scn.buyer.headers
    )
    assert r.status_code == 200, r.text
    draft = draft_job(client, buyer_keys, scn.buyer)
    actors = {
        "anon": ANON,
        "owner": scn.buyer,
        "other_buyer": register(client, "buyer", "stranger"),
        "accepted": accepted,
        "pending": pending,
        "other_provider": other_provider,
        "admin": scn.admin,
    }
    ids = {
        "job": scn.job_id,
        "draft": draft,
        "listing": scn.listings[accepted.id],
        "offer": scn.offers(pending)[0]["id"],
        "provider": accepted.id,
        "batch": "pob_unknown",
    }
    return World(scn, actors, ids)


Body = Callable[[World], dict[str, Any]]
CTX: Body = lambda w: {"content": w.scn.keys.public_context().to_bytes()}  # noqa: E731
MODEL: Body = lambda w: {"content": model_file()}  # noqa: E731


def _envelope(w: World) -> dict[str, Any]:
    return {"content": w.scn.envelope(w.actors["accepted"], 1, summands=4)}


def _json(body: dict[str, Any]) -> Body:
    return lambda w: {"json": body}


def _m(anon: int, owner: int, other_buyer: int, accepted: int, pending: int, other_provider: int, admin: int) -> dict[str, int]:  # fmt: skip
    return dict(
        zip(
            ROLES, (anon, owner, other_buyer, accepted, pending, other_provider, admin), strict=True
        )
    )


CASES: list[tuple[str, str, Body | None, dict[str, int]]] = [
    ("GET", "/v1/accounts/me", None, _m(401, 200, 200, 200, 200, 200, 200)),
    ("POST", "/v1/listings", _json(listing_body()), _m(401, 403, 403, 201, 201, 201, 403)),
    ("GET", "/v1/listings", None, _m(401, 403, 403, 200, 200, 200, 200)),
    ("GET", "/v1/listings/{listing}", None, _m(401, 403, 403, 200, 404, 404, 200)),
    ("PATCH", "/v1/listings/{listing}", _json({"ask_cents": 120}), _m(401, 403, 403, 200, 404, 404, 403)),
    ("DELETE", "/v1/listings/{listing}", None, _m(401, 403, 403, 200, 404, 404, 403)),
    ("POST", "/v1/jobs", _json(job_body()), _m(401, 201, 201, 403, 403, 403, 403)),
    ("GET", "/v1/jobs", None, _m(401, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/jobs/{job}", None, _m(401, 200, 404, 200, 200, 404, 200)),
    ("PUT", "/v1/jobs/{draft}/context", CTX, _m(401, 200, 404, 404, 404, 404, 403)),
    ("PUT", "/v1/jobs/{draft}/model", MODEL, _m(401, 200, 404, 404, 404, 404, 403)),
    ("POST", "/v1/jobs/{draft}/fund", None, _m(401, 200, 404, 404, 404, 404, 403)),
    ("POST", "/v1/jobs/{job}/cancel", None, _m(401, 200, 404, 403, 403, 404, 403)),
    ("POST", "/v1/jobs/{job}/complete", None, _m(401, 409, 404, 403, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/matching", None, _m(401, 200, 404, 403, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/context", None, _m(401, 200, 404, 200, 403, 404, 403)),
    ("PUT", "/v1/jobs/{job}/final-model", MODEL, _m(401, 200, 404, 403, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/final-model", None, _m(401, 200, 404, 200, 403, 404, 403)),
    ("POST", "/v1/admin/jobs/{job}/credit", _json({"amount_cents": 5}), _m(401, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/admin/tick", None, _m(401, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/admin/providers/{provider}/approve", None, _m(401, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/admin/providers/{provider}/revoke", None, _m(401, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/accounts/me/connect", None, _m(401, 403, 403, 409, 409, 409, 403)),
    ("GET", "/v1/offers", None, _m(401, 403, 403, 200, 200, 200, 200)),
    ("POST", "/v1/offers/{offer}/accept", None, _m(401, 403, 403, 404, 200, 404, 403)),
    ("POST", "/v1/offers/{offer}/decline", None, _m(401, 403, 403, 404, 200, 404, 403)),
    ("GET", "/v1/jobs/{job}/rounds/1", None, _m(401, 200, 404, 200, 200, 404, 200)),
    ("GET", "/v1/jobs/{job}/rounds/1/model", None, _m(401, 200, 404, 200, 403, 404, 403)),
    ("PUT", "/v1/jobs/{job}/rounds/2/model", MODEL, _m(401, 409, 404, 403, 403, 404, 403)),
    ("PUT", "/v1/jobs/{job}/rounds/1/submission", _envelope, _m(401, 403, 403, 201, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/rounds/1/aggregate", None, _m(401, 409, 404, 403, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/rounds/1/groups/0/aggregate", None, _m(401, 409, 404, 403, 403, 404, 403)),
    ("POST", "/v1/jobs/{job}/rounds/1/groups", _json({"groups": [{"index": 0, "value": 1.0}]}), _m(401, 409, 404, 403, 403, 404, 403)),
    ("POST", "/v1/jobs/{job}/rounds/1/metrics", _json({"loss": 1.0, "accuracy": 0.5}), _m(401, 409, 404, 403, 403, 404, 403)),
    ("POST", "/v1/jobs/{job}/privacy", _json({"round": 1, "epsilon": 1.0, "delta": 1e-5}), _m(401, 403, 403, 422, 403, 404, 403)),
    ("GET", "/v1/jobs/{job}/privacy", None, _m(401, 200, 404, 200, 200, 404, 200)),
    ("GET", "/v1/payouts", None, _m(401, 403, 403, 200, 200, 200, 200)),
    ("POST", "/v1/admin/payouts/run", None, _m(401, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/admin/payouts/{batch}/mark-paid", None, _m(401, 403, 403, 403, 403, 403, 404)),
    ("GET", "/v1/reputation", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/reputation/{provider}", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/ledger/verify", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/jobs/{job}/receipt", None, _m(401, 200, 404, 403, 403, 404, 200)),
    ("GET", "/v1/log/key", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/log/head", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/log/consistency?first=1&second=2", None, _m(422, 422, 422, 422, 422, 422, 422)),
    ("GET", "/v1/log/inclusion?index=0&size=1", None, _m(200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/log/leaves/0", None, _m(401, 200, 404, 200, 404, 404, 200)),
    ("GET", "/v1/jobs/{job}/records", None, _m(401, 200, 404, 200, 200, 404, 200)),
    ("PUT", "/v1/jobs/{job}/manifest", _json({"kind": "manifest"}), _m(401, 422, 404, 403, 403, 403, 403)),
    ("POST", "/v1/jobs/{job}/records", _json({"kind": "model"}), _m(401, 422, 404, 403, 403, 403, 403)),
    ("PUT", "/v1/accounts/me/identity", _json({"kind": "identity"}), _m(401, 422, 422, 422, 422, 422, 422)),
    ("GET", "/v1/accounts/me/records", None, _m(401, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/accounts/{provider}/identity", None, _m(401, 404, 404, 404, 404, 404, 404)),
    ("POST", "/v1/webhooks/stripe", _json({"type": "payment_intent.succeeded"}), _m(400, 400, 400, 400, 400, 400, 400)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES]
)
def test_endpoint_authorization(
    world: World,
    client: TestClient,
    method: str,
    path: str,
    body: Body | None,
    expected: dict[str, int],
) -> None:
    """Each caller gets the expected status; a refused call leaves every row and blob as is."""
    url = path.format(**world.ids)
    # Refusals first, on an unchanged world; the allowed calls (which may change it) last.
    for role in sorted(ROLES, key=lambda r: expected[r] < 300):
        actor = world.actors[role]
        headers = actor.headers if actor.api_key else {}
        kwargs = body(world) if body else {}
        before = snapshot(client)
        r = client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == expected[role], f"{role}: {r.status_code} {r.text[:300]}"
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert snapshot(client) == before, f"{role} changed state with {r.status_code}"


def test_matrix_covers_every_route(client: TestClient) -> None:
    """No API route escapes the matrix (POST /v1/accounts is the only public one)."""
    spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    normalize = {
        "{listing}": "{listing_id}",
        "{offer}": "{offer_id}",
        "{draft}": "{job_id}",
        "{job}": "{job_id}",
        "{provider}/identity": "{account_id}/identity",
        "{provider}": "{provider_id}",
        "/leaves/0": "/leaves/{index}",
        "{batch}": "{batch_id}",
        "/groups/0/": "/groups/{index}/",
    }
    covered = set()
    for method, path, _, _ in CASES:
        path = path.split("?")[0]
        for k, v in normalize.items():
            path = path.replace(k, v)
        covered.add((method, path.replace("/1", "/{number}").replace("/2/", "/{number}/")))
    assert routes - covered == {("POST", "/v1/accounts")}


def test_provider_sees_only_itself(world: World, client: TestClient) -> None:
    """A provider's view of a job hides the other providers and the buyer's money."""
    me = world.actors["accepted"]
    job = client.get(f"/v1/jobs/{world.ids['job']}", headers=me.headers).json()
    assert job["accepted_providers"] == [me.id]
    assert job["funded_cents"] is None
    rnd = client.get(f"/v1/jobs/{world.ids['job']}/rounds/1", headers=me.headers).json()
    assert rnd["expected_providers"] == [me.id] and rnd["expected_count"] == 3
    owner = client.get(f"/v1/jobs/{world.ids['job']}", headers=world.actors["owner"].headers).json()
    assert len(owner["accepted_providers"]) == 3


def test_no_endpoint_serves_an_envelope(world: World, client: TestClient) -> None:
    """Nobody, the buyer included, can download an individual ciphertext."""
    scn = world.scn
    me = world.actors["accepted"]
    assert scn.submit(me, 1, scn.envelope(me, 1, summands=4)).status_code == 201
    for actor in (world.actors["owner"], world.actors["accepted"], world.actors["admin"]):
        r = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/submission", headers=actor.headers)
        assert r.status_code == 405
    spec = client.get("/openapi.json").json()
    assert "get" not in spec["paths"]["/v1/jobs/{job_id}/rounds/{number}/submission"]
