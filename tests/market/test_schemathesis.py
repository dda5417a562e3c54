"""Schemathesis against the app's own OpenAPI schema: every operation, positive and negative
cases, authenticated as a provider, a buyer and an admin, against a seeded database.

No generated request may get a 5xx; every error is `application/problem+json`; every
response conforms to the documented status codes, content types and schemas.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crypto import BuyerKeys
from market import Settings, create_app
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, Actor, listing_body, model_file, register
from tests.utils.scenario import Scenario, draft_job, open_job

pytestmark = pytest.mark.slow

# Per operation and mode; POLLEN_SCHEMATHESIS_EXAMPLES raises it (and randomizes) for a
# longer hunt, e.g. `POLLEN_SCHEMATHESIS_EXAMPLES=500 pytest tests/market/test_schemathesis.py`.
EXAMPLES_PER_MODE = int(os.environ.get("POLLEN_SCHEMATHESIS_EXAMPLES", "20"))
DERANDOMIZE = "POLLEN_SCHEMATHESIS_EXAMPLES" not in os.environ
MIN_TOTAL_CASES = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Operations that end things go last, so the others see the seeded objects alive first.
_TERMINAL = ("/cancel", "/complete", "/decline", "/mark-paid")


@dataclass
class World:
    client: TestClient
    actors: list[Actor]
    ids: dict[str, list[Any]]
    bodies: list[bytes]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A running job with a submission in round 1, a draft job, listings, a pending offer."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    settings = Settings(
        data_dir=data_dir,
        admin_api_key=ADMIN_KEY,
        deadline_tick_s=0,
        # Generated keys are all wrong; the limiter is pinned in test_ratelimit.py.
        auth_fail_limit=10**9,
    )
    app = create_app(settings)
    clock = FakeClock()
    app.state.clock = clock
    keys = BuyerKeys.generate()
    with TestClient(app, raise_server_exceptions=False) as client:
        scn: Scenario = open_job(client, clock, keys, providers=4, accept=3, max_providers=4)
        accepted, pending = scn.providers[0], scn.providers[3]
        first = scn.envelope(scn.providers[1], 1, summands=4)
        assert scn.submit(scn.providers[1], 1, first).status_code == 201
        draft = draft_job(client, keys, scn.buyer)
        outsider = register(client, "provider", "outsider")
        client.post("/v1/listings", json=listing_body(), headers=outsider.headers)
        ids: dict[str, list[Any]] = {
            "job_id": [scn.job_id, draft],
            "listing_id": [scn.listings[accepted.id], scn.listings[pending.id]],
            "offer_id": [scn.offers(pending)[0]["id"]],
            "provider_id": [p.id for p in scn.providers],
            "batch_id": ["pob_unknown"],
            "number": [1, 2],
        }
        bodies = [
            model_file(),
            keys.public_context().to_bytes(),
            scn.envelope(accepted, 1, summands=4),
            first,  # a replay of another provider's accepted envelope
            pickle.dumps({"w": [1.0, 2.0]}),
        ]
        actors = [accepted, pending, scn.buyer, scn.admin]
        yield World(client, actors, ids, bodies)


def _order(label: str) -> tuple[bool, str]:
    return (any(label.endswith(t) or t + " " in label for t in _TERMINAL), label)


def _send(client: TestClient, case: schemathesis.Case, headers: dict[str, str]) -> Any:
    """Send a generated case through the app's TestClient (its lifespan and clock)."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    # The key goes on last: schemathesis drops `Authorization` from some negative cases, and
    # these runs are meant to get past authentication into validation.
    request: dict[str, Any] = {
        "headers": {k: v for k, v in kw["headers"].items() if isinstance(v, str)} | headers,
        "params": kw.get("params") or None,
    }
    if "json" in kw:
        request["json"] = kw["json"]
    elif "data" in kw:
        data = kw["data"]
        if isinstance(data, (bytes, str)):
            request["content"] = data
        else:
            request["data"] = data
    return client.request(kw["method"], kw["url"], **request)


def _check_problem(response: Any) -> str | None:
    if response.status_code < 400:
        return None
    if response.headers.get("content-type") != "application/problem+json":
        return f"error {response.status_code} is {response.headers.get('content-type')}"
    body = response.json()
    if body.get("status") != response.status_code or not body.get("code"):
        return f"problem body does not match its status: {body}"
    return None


def _fuzz(
    world: World,
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    counts: Counter[str],
    failures: list[str],
) -> None:
    """Run one operation's generated cases in one mode, recording each failure."""
    negative = mode == schemathesis.GenerationMode.NEGATIVE
    # Negative data can still be valid where the schema is loose (any string is a job id),
    # so for it only what every response must be is checked.
    checks = [not_a_server_error] if negative else CHECKS

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        # Mostly a path parameter names a real object; half the time a binary body is a real
        # file (model, context, envelopes, a pickle).
        for name, real in world.ids.items():
            if name in (case.path_parameters or {}) and data.draw(st.integers(0, 3)) > 0:
                case.path_parameters[name] = data.draw(st.sampled_from(real))
        if case.media_type == "application/octet-stream" and data.draw(st.booleans()):
            case.body = data.draw(st.sampled_from(world.bodies))
        actor = data.draw(st.sampled_from(world.actors))
        response = _send(world.client, case, actor.headers)
        counts[operation.label] += 1
        problem = _check_problem(response)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            problem = problem or str(group)[:1500]
        if problem is not None:
            failures.append(
                f"{operation.label} [{mode.value}, {actor.role}] {response.status_code}: "
                f"{problem}\n  {case.path_parameters} query={case.query} body={case.body!r:.200}"
            )

    try:
        run()
    except Unsatisfiable:
        # An operation with no parameters and no body has no invalid request to generate.
        assert negative, f"{operation.label}: no valid request could be generated"


def test_every_operation_survives_generated_requests(world: World) -> None:
    """≥1,000 generated requests over every operation: no 5xx, problem+json errors, and
    responses that match the documented statuses, content types and schemas."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/v1/")]
    operations.sort(key=lambda op: _order(op.label))
    counts: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz(world, operation, mode, counts, failures)
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    assert {op.label for op in operations} == set(counts), "an operation got no case"
    assert len(operations) >= 37
    assert total >= MIN_TOTAL_CASES, f"only {total} cases generated: {counts}"
    print(f"schemathesis: {total} cases over {len(operations)} operations in {elapsed:.1f} s")
