"""Failed authentication is rate-limited per client address over a sliding window."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from market import Settings, create_app
from market.errors import TooManyFailedAttemptsError
from market.ratelimit import AuthFailureLimiter
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, Actor, register
from tests.utils.snapshot import snapshot

LIMIT = 3
WINDOW_S = 30.0
BAD = {"Authorization": "Bearer pk_not-a-real-key"}


@pytest.fixture
def clock() -> FakeClock:
    # A whole-second start keeps the window arithmetic exact.
    return FakeClock(datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def client(tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        admin_api_key=ADMIN_KEY,
        deadline_tick_s=0,
        auth_fail_limit=LIMIT,
        auth_fail_window_s=WINDOW_S,
    )
    app = create_app(settings)
    app.state.clock = clock
    with TestClient(app) as test_client:
        yield test_client


def _fail(client: TestClient, times: int) -> None:
    for _ in range(times):
        r = client.get("/v1/accounts/me", headers=BAD)
        assert r.status_code == 401, r.text


def test_too_many_bad_keys_get_429_with_retry_after(client: TestClient) -> None:
    """After `limit` bad keys the address gets 429 with Retry-After and nothing changes."""
    buyer = register(client, "buyer")
    _fail(client, LIMIT)
    before = snapshot(client)
    r = client.post("/v1/jobs", json={"title": "x"}, headers=BAD)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "too-many-failed-attempts"
    assert int(r.headers["Retry-After"]) == WINDOW_S
    assert r.json()["retry_after"] == WINDOW_S
    # A correct key from the same address is refused too: 429 vs 200 would be an oracle.
    r = client.get("/v1/accounts/me", headers=buyer.headers)
    assert r.status_code == 429
    assert snapshot(client) == before


def test_requests_without_a_key_are_not_attempts(client: TestClient) -> None:
    """Public reads and keyless calls neither count nor get blocked."""
    _fail(client, LIMIT)
    assert client.get("/v1/reputation").status_code == 200
    assert client.get("/v1/ledger/verify").status_code == 200
    assert client.get("/v1/accounts/me").status_code == 401
    assert client.post("/v1/accounts", json={"role": "buyer", "name": "b"}).status_code == 201


def test_window_expiry_lets_the_address_back_in(client: TestClient, clock: FakeClock) -> None:
    """The block lifts when the oldest failure leaves the window; Retry-After counts down."""
    buyer = register(client, "buyer")
    _fail(client, 1)
    clock.advance(10)
    _fail(client, LIMIT - 1)
    r = client.get("/v1/accounts/me", headers=buyer.headers)
    assert (r.status_code, r.headers["Retry-After"]) == (429, str(int(WINDOW_S - 10)))
    clock.advance(WINDOW_S - 10 - 1)
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 429
    clock.advance(1)  # the first failure has left the window: one more attempt is allowed
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 200
    _fail(client, 1)
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 429
    clock.advance(WINDOW_S)
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 200


def test_successful_requests_are_never_limited(client: TestClient) -> None:
    """Many good requests in a row never meet the limiter."""
    buyer = register(client, "buyer")
    _fail(client, LIMIT - 1)
    for _ in range(10 * LIMIT):
        assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 200
    _fail(client, 1)  # the earlier failures still count: good requests do not reset them
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 429


def test_limit_is_per_address(client: TestClient) -> None:
    """A blocked address does not lock out a caller from another address."""
    buyer = register(client, "buyer")
    _fail(client, LIMIT)
    assert client.get("/v1/accounts/me", headers=buyer.headers).status_code == 429
    app = client.app
    with TestClient(app, client=("203.0.113.7", 4000)) as elsewhere:
        assert elsewhere.get("/v1/accounts/me", headers=buyer.headers).status_code == 200
        assert elsewhere.get("/v1/accounts/me", headers=BAD).status_code == 401


def test_blocked_caller_is_refused_on_every_authenticated_route(client: TestClient) -> None:
    """The block covers role-guarded routes and the optional-key public ledger read too."""
    operator = Actor("admin", "admin", ADMIN_KEY)
    _fail(client, LIMIT)
    for method, url in [
        ("POST", "/v1/admin/tick"),
        ("GET", "/v1/listings"),
        ("GET", "/v1/jobs/job_x"),
        ("GET", "/v1/ledger/verify"),
    ]:
        r = client.request(method, url, headers=operator.headers)
        assert r.status_code == 429, (url, r.text)
        assert "Retry-After" in r.headers


def test_limiter_counts_exactly_under_threads() -> None:
    """Concurrent failures from many threads are all counted, none lost."""
    limiter = AuthFailureLimiter(limit=800, window_s=60)  # 8 threads x 100
    threads = [
        threading.Thread(
            target=lambda: [limiter.record_failure("198.51.100.1", 100.0) for _ in range(100)]
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(TooManyFailedAttemptsError):
        limiter.check("198.51.100.1", 100.0)
    limiter.check("198.51.100.1", 100.0 + 60)  # the whole burst has left the window
    assert limiter.tracked() == 0
    with pytest.raises(ValueError):
        AuthFailureLimiter(limit=0, window_s=1)
