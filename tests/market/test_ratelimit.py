"""Failed authentication is limited per client address over a sliding window, counted in the
database (shared by every server process), throttling wrong keys and never the owner."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from market import Settings, create_app
from market.models import RateEvent
from market.server import uvicorn_config
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, Actor, register
from tests.utils.snapshot import snapshot
from tests.utils.stripe_env import free_port

LIMIT = 3
WINDOW_S = 30.0
BAD = {"Authorization": "Bearer pk_not-a-real-key"}
ME = "/v1/accounts/me"


@pytest.fixture
def clock() -> FakeClock:
    # A whole-second start keeps the window arithmetic exact.
    return FakeClock(datetime(2030, 1, 1, tzinfo=UTC))


def _settings(db_url: str, data_dir: Path, **over: object) -> Settings:
    fields: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "admin_api_key": ADMIN_KEY,
        "deadline_tick_s": 0,
        "auth_fail_limit": LIMIT,
        "auth_fail_window_s": WINDOW_S,
    }
    fields.update(over)
    return Settings(**fields)  # type: ignore[arg-type]


def _app(db_url: str, data_dir: Path, clock: FakeClock, **over: object) -> FastAPI:
    app = create_app(_settings(db_url, data_dir, **over))
    app.state.clock = clock
    return app


@pytest.fixture
def client(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(_app(db_url, tmp_path / "data", clock)) as test_client:
        yield test_client


def _fail(
    client: TestClient | httpx.Client, times: int, headers: dict[str, str] | None = None
) -> None:
    for _ in range(times):
        r = client.get(ME, headers={**BAD, **(headers or {})})
        assert r.status_code == 401, r.text


def _rows(app: FastAPI) -> int:
    with Session(app.state.engine) as s:
        return int(s.exec(select(func.count()).select_from(RateEvent)).one())


def test_wrong_keys_past_the_limit_get_429_with_retry_after(client: TestClient) -> None:
    """Past `limit` wrong keys the address's wrong keys get 429 with Retry-After; nothing
    changes."""
    _fail(client, LIMIT)
    before = snapshot(client)
    r = client.post("/v1/jobs", json={"title": "x"}, headers=BAD)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "too-many-failed-attempts"
    assert int(r.headers["Retry-After"]) == WINDOW_S
    assert r.json()["retry_after"] == WINDOW_S
    assert snapshot(client) == before


def test_a_correct_key_is_never_refused_for_others_failures(client: TestClient) -> None:
    """An address past the limit still lets its correct keys in, the admin's included.

    Issue 11: the limiter refused every key from a blocked address, so anyone sharing the
    admin's address (a NAT, or a spoofed X-Forwarded-For) locked the admin out with a few
    wrong keys. Throttle the failures, not the owner.
    """
    buyer = register(client, "buyer")
    _fail(client, LIMIT)
    assert client.get(ME, headers=BAD).status_code == 429
    for _ in range(3 * LIMIT):
        assert client.get(ME, headers=buyer.headers).status_code == 200
        r = client.post("/v1/admin/tick", headers=Actor("admin", "admin", ADMIN_KEY).headers)
        assert r.status_code == 200, r.text
    assert client.post("/ui/login", data={"api_key": buyer.api_key}).status_code == 200
    # Good requests do not reset the count: the wrong keys are still refused.
    assert client.get(ME, headers=BAD).status_code == 429


def test_requests_without_a_key_are_not_attempts(client: TestClient) -> None:
    """Public reads and keyless calls neither count nor get blocked."""
    _fail(client, LIMIT)
    assert client.get("/v1/reputation").status_code == 200
    assert client.get("/v1/ledger/verify").status_code == 200
    assert client.get(ME).status_code == 401
    assert client.post("/v1/accounts", json={"role": "buyer", "name": "b"}).status_code == 201


def test_window_expiry_lets_the_address_back_in(client: TestClient, clock: FakeClock) -> None:
    """The block lifts when the oldest failure leaves the window; Retry-After counts down."""
    _fail(client, 1)
    clock.advance(10)
    _fail(client, LIMIT - 1)
    r = client.get(ME, headers=BAD)
    assert (r.status_code, r.headers["Retry-After"]) == (429, str(int(WINDOW_S - 10)))
    clock.advance(WINDOW_S - 10 - 1)
    assert client.get(ME, headers=BAD).status_code == 429
    clock.advance(1)  # the first failure has left the window: one more attempt is allowed
    _fail(client, 1)
    assert client.get(ME, headers=BAD).status_code == 429
    clock.advance(WINDOW_S)
    _fail(client, LIMIT)


def test_limit_is_per_address(client: TestClient) -> None:
    """A blocked address does not affect a caller from another address."""
    _fail(client, LIMIT)
    assert client.get(ME, headers=BAD).status_code == 429
    with TestClient(client.app, client=("203.0.113.7", 4000)) as elsewhere:
        _fail(elsewhere, LIMIT)  # type: ignore[arg-type]
        assert elsewhere.get(ME, headers=BAD).status_code == 429


def test_blocked_address_gets_429_on_every_authenticated_route(client: TestClient) -> None:
    """Wrong keys past the limit get 429 on role-guarded routes, the dashboard's login form
    and the optional-key public ledger read alike."""
    _fail(client, LIMIT)
    for method, url in [
        ("POST", "/v1/admin/tick"),
        ("GET", "/v1/listings"),
        ("GET", "/v1/jobs/job_x"),
        ("GET", "/v1/ledger/verify"),
    ]:
        r = client.request(method, url, headers=BAD)
        assert r.status_code == 429, (url, r.text)
        assert "Retry-After" in r.headers
    r = client.post("/ui/login", data={"api_key": "pk_guess"})
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_failures_count_across_server_processes(
    db_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Two app instances on one database share one count: N workers do not allow N × limit.

    Issue 11: each process counted in its own memory, so behind N workers an address got
    N times the limit.
    """
    one = _app(db_url, tmp_path / "one", clock)
    two = _app(db_url, tmp_path / "two", clock, auto_migrate=False)
    with TestClient(one) as a, TestClient(two) as b:
        _fail(a, 1)
        _fail(b, 1)
        _fail(a, LIMIT - 2)
        assert b.get(ME, headers=BAD).status_code == 429
        assert a.get(ME, headers=BAD).status_code == 429
        clock.advance(WINDOW_S)
        _fail(b, 1)


def test_concurrent_failures_on_two_processes_are_all_counted(
    db_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Wrong keys sent at once to two app instances are all counted, none lost."""
    limit = 24
    one = _app(db_url, tmp_path / "one", clock, auth_fail_limit=limit)
    two = _app(db_url, tmp_path / "two", clock, auth_fail_limit=limit, auto_migrate=False)
    with TestClient(one) as a, TestClient(two) as b:
        statuses: list[int] = []

        def hammer(c: TestClient) -> None:
            statuses.extend(c.get(ME, headers=BAD).status_code for _ in range(limit // 4))

        threads = [threading.Thread(target=hammer, args=(c,)) for c in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses.count(401) == limit
        assert a.get(ME, headers=BAD).status_code == 429
        assert b.get(ME, headers=BAD).status_code == 429


def test_the_table_stays_bounded_and_is_pruned(client: TestClient, clock: FakeClock) -> None:
    """A flood past the limit writes nothing more; rows older than the window are dropped."""
    _fail(client, LIMIT)
    for _ in range(10 * LIMIT):
        assert client.get(ME, headers=BAD).status_code == 429
    assert _rows(client.app) == LIMIT  # type: ignore[arg-type]
    clock.advance(WINDOW_S)
    with TestClient(client.app, client=("203.0.113.9", 4000)) as other:
        _fail(other, 1)  # type: ignore[arg-type]
    assert _rows(client.app) == 1  # type: ignore[arg-type]


# ------------------------------------------------------- the address, under real uvicorn


@pytest.fixture
def serve(tmp_path: Path, clock: FakeClock) -> Iterator[object]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**over: object) -> str:
        settings = _settings(f"sqlite:///{tmp_path / 'u.db'}", tmp_path / "u", **over)
        app = create_app(settings)
        app.state.clock = clock
        port = free_port()
        config = uvicorn_config(app, settings, host="127.0.0.1", port=port)
        config.log_level = "warning"
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            threading.Event().wait(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(serve: object) -> None:
    """Under `pollen server`, X-Forwarded-For from a peer not in POLLEN_TRUSTED_PROXIES
    (loopback included) changes nothing: rotating it does not escape the limit, and spoofing
    the admin's address does not lock the admin out.

    Issue 11: uvicorn believes X-Forwarded-For from 127.0.0.1 by default, and the server ran
    it with its defaults.
    """
    url = serve()  # type: ignore[operator]
    with httpx.Client(base_url=url) as http:
        for i in range(LIMIT):
            forwarded = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            assert http.get(ME, headers={**BAD, **forwarded}).status_code == 401
        r = http.get(ME, headers={**BAD, "X-Forwarded-For": "198.51.100.200"})
        assert r.status_code == 429, r.text
        admin = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Forwarded-For": "198.51.100.1"}
        assert http.get(ME, headers=admin).status_code == 200


def test_forwarded_for_from_a_trusted_proxy_names_the_client(serve: object) -> None:
    """Behind a configured proxy each forwarded client is counted on its own address."""
    url = serve(trusted_proxies="127.0.0.1")  # type: ignore[operator]
    with httpx.Client(base_url=url) as http:
        guesser = {"X-Forwarded-For": "198.51.100.7"}
        _fail(http, LIMIT, guesser)
        assert http.get(ME, headers={**BAD, **guesser}).status_code == 429
        # A client prepending a spoofed address is still counted under its own, which the
        # proxy appended last.
        spoofed = {"X-Forwarded-For": "203.0.113.50, 198.51.100.7"}
        assert http.get(ME, headers={**BAD, **spoofed}).status_code == 429
        _fail(http, 1, {"X-Forwarded-For": "198.51.100.8"})


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    """A typo in POLLEN_TRUSTED_PROXIES stops the server at startup instead of trusting
    nobody (or everybody) silently."""
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings(data_dir=tmp_path, trusted_proxies="10.0.0.0/8, localhost")
    assert Settings(data_dir=tmp_path, trusted_proxies="10.0.0.0/8, ::1").trusted_proxy_list == [
        "10.0.0.0/8",
        "::1",
    ]
