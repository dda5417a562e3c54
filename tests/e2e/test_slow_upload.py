"""Slow and stalled envelope uploads against the server under uvicorn, on SQLite and PostgreSQL.

A provider whose upload stalls mid-body must not hold up anyone else: the other providers'
submissions go through promptly, the round closes with them, and the stalled upload leaves
nothing behind (no submission, no temp file, the sum unchanged) once its socket closes or the
server's idle timeout (`POLLEN_UPLOAD_IDLE_TIMEOUT_S`, 408) gives up on it. A stalled upload
holds no database connection: more of them than the connection pool has do not starve it.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest

from agents.buyer import post_job
from agents.client import PollenClient
from agents.processes import free_port, start_server, stop, wait_ready
from agents.trust import register_identity
from crypto import BuyerKeys, EnvelopeBinding, decrypt_aggregate, encrypt_update, read_header
from crypto.identity import IdentityKey
from market.db import POOL_CAPACITY
from tests.utils import postgres
from tests.utils.factories import job_body, listing_body

# The buyer's identity key: it signs every job's manifest and every round's model.
BUYER_IDENTITY = IdentityKey.generate()

pytestmark = pytest.mark.e2e

NORMAL = 3  # providers that upload normally
STALLED = POOL_CAPACITY + 2  # more stalled uploads than the server has connections
DEADLINE_S = 8


@dataclass
class Server:
    url: str
    admin_key: str
    blob_tmp: Path
    database_url: str | None

    def temp_files(self) -> list[Path]:
        return sorted(self.blob_tmp.glob("*")) if self.blob_tmp.exists() else []


def _serve(tmp_path: Path, database_url: str | None, **env: str) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    env = {"POLLEN_DEADLINE_TICK_S": "0.3", "POLLEN_MIN_ROUND_DEADLINE_S": "1", **env}
    if database_url:
        env["POLLEN_DATABASE_URL"] = database_url
    port, admin_key = free_port(), secrets.token_urlsafe(16)
    proc = start_server(data_dir, port, admin_key, extra_env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield Server(
            f"http://127.0.0.1:{port}", admin_key, data_dir / "blobs" / ".tmp", database_url
        )
    finally:
        stop(proc)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The marketplace under uvicorn (idle-upload timeout at its default), both backends."""
    if request.param == "sqlite":
        yield from _serve(tmp_path, None)
        return
    pg: str = request.getfixturevalue("pg_server")
    name = f"pollen_slow_{uuid.uuid4().hex[:10]}"
    try:
        yield from _serve(tmp_path, postgres.create_database(pg, name))
    finally:
        postgres.drop_database(pg, name)


@dataclass
class Provider:
    """A provider with a registered identity key: a signed job takes only signed envelopes."""

    id: str
    api_key: str
    identity: IdentityKey

    def signature(self, envelope: bytes) -> str:
        header = envelope[: read_header(envelope).header_len]
        return self.identity.sign("envelope", {"header_sha256": hashlib.sha256(header).hexdigest()})


@dataclass
class Round:
    server: Server
    keys: BuyerKeys
    buyer: PollenClient
    job_id: str
    params: int
    providers: list[Provider]

    @property
    def path(self) -> str:
        return f"/v1/jobs/{self.job_id}/rounds/1/submission"

    def envelope(self, p: Provider, value: float = 0.1) -> bytes:
        binding = EnvelopeBinding(self.job_id, 1, p.id, self.params, len(self.providers))
        vector = np.full(self.params, value, dtype=np.float32)
        return encrypt_update(self.keys.public_context(), vector, binding=binding, weight=1.0,
                              samples=100)  # fmt: skip

    def submit(self, p: Provider, value: float = 0.1) -> tuple[int, float]:
        started = time.perf_counter()
        with PollenClient(self.server.url, p.api_key) as client:
            envelope = self.envelope(p, value)
            client.submit(self.job_id, 1, envelope, signature=p.signature(envelope))
        return 201, time.perf_counter() - started


def _running_round(server: Server, providers: int, deadline_s: int) -> Round:
    anon = PollenClient(server.url, None)
    buyer = PollenClient(server.url, anon.register(role="buyer", name="slow-buyer").api_key)
    accounts = []
    for i in range(providers):
        acct = anon.register(role="provider", name=f"p{i}")
        PollenClient(server.url, server.admin_key).approve_provider(acct.id)
        identity = IdentityKey.generate()
        with PollenClient(server.url, acct.api_key) as client:
            register_identity(client, identity, acct.id)
            client.create_listing(listing_body(name=f"p{i}", capacity=1))
        accounts.append(Provider(acct.id, acct.api_key, identity))
    spec = job_body(rounds=1, min_providers=providers, max_providers=providers, quorum=NORMAL,
                    round_deadline_s=deadline_s, budget_cents=100_000)  # fmt: skip
    keys = BuyerKeys.generate()
    job = post_job(buyer, keys, spec, identity=BUYER_IDENTITY)
    PollenClient(server.url, server.admin_key).credit_job(job.id, spec["budget_cents"])
    for p in accounts:  # one at a time: the last acceptance starts the job
        with PollenClient(server.url, p.api_key) as client:
            (offer,) = [o for o in client.list_offers() if o.job_id == job.id]
            client.accept_offer(offer.id)
    status = buyer.get_job(job.id)
    assert status.state == "running"
    return Round(server, keys, buyer, job.id, int(status.param_count), accounts)


def _open_upload(rnd: Round, p: Provider, body: bytes, *, declared: int | None = None,
                 signature: str = "") -> socket.socket:  # fmt: skip
    """Send an upload's headers and `body`, then nothing more: a stalled provider."""
    parts = urlsplit(rnd.server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (
        f"PUT {rnd.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {p.api_key}\r\nContent-Type: application/octet-stream\r\n"
        + (f"Pollen-Signature: {signature}\r\n" if signature else "")
        + f"Content-Length: {declared if declared is not None else len(body) * 2}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _status(sock: socket.socket, timeout: float) -> int:
    """The HTTP status the server answered on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed without a status line: {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _no_transaction_stays_open(database_url: str) -> None:
    """No connection of the server sits in a transaction for long: a request or the
    deadline pass may be between two statements at the instant of one look (CI once saw
    that), a stalled upload holding one would be there at every look for 5 s."""
    _wait(lambda: _connections_in_transaction(database_url) == 0, 5,
          "no connection idle in a transaction")  # fmt: skip


def _connections_in_transaction(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_stalled_uploads_block_nobody_and_leave_nothing(server: Server) -> None:
    """With more uploads stalled mid-body than the server has database connections, other
    providers are accepted in seconds, the round closes with them, and once the stalled
    sockets close no submission, temp file or change to the sum remains of them."""
    rnd = _running_round(server, NORMAL + STALLED, DEADLINE_S)
    normal, stalled = rnd.providers[:NORMAL], rnd.providers[NORMAL:]
    sockets = []
    try:
        for p in stalled:
            envelope = rnd.envelope(p, value=5.0)
            sockets.append(_open_upload(rnd, p, envelope[: len(envelope) // 2],
                                        declared=len(envelope),
                                        signature=p.signature(envelope)))  # fmt: skip
        # Every stalled upload got past its checks and is streaming into a temp file.
        _wait(lambda: len(server.temp_files()) == STALLED, 10, "the stalled uploads' temp files")
        if server.database_url:
            _no_transaction_stays_open(server.database_url)
        latencies = [rnd.submit(p, value=0.1 * (i + 1))[1] for i, p in enumerate(normal)]
        assert max(latencies) < 10, latencies
        _wait(lambda: rnd.buyer.get_round(rnd.job_id, 1).state == "closed", DEADLINE_S + 10,
              "the round to close at its deadline")  # fmt: skip
        closed = rnd.buyer.get_round(rnd.job_id, 1)
        assert closed.close_reason == "deadline"
        assert sorted(closed.included) == sorted(p.id for p in normal)
        aggregate = rnd.buyer.get_aggregate(rnd.job_id, 1)
    finally:
        for sock in sockets:
            sock.close()
    _wait(lambda: not server.temp_files(), 10, "the abandoned uploads' temp files to go")
    after = rnd.buyer.get_round(rnd.job_id, 1)
    assert after.submitted == NORMAL and after.included == closed.included
    assert rnd.buyer.get_aggregate(rnd.job_id, 1) == aggregate
    total = decrypt_aggregate(rnd.keys, aggregate)
    assert total.count == NORMAL
    np.testing.assert_allclose(total.total, np.full(rnd.params, 0.6), atol=1e-3)
    if server.database_url:
        _no_transaction_stays_open(server.database_url)


@pytest.fixture
def impatient_server(tmp_path: Path) -> Iterator[Server]:
    """SQLite server that gives up on an upload after 1.5 s without a byte."""
    yield from _serve(tmp_path, None, POLLEN_UPLOAD_IDLE_TIMEOUT_S="1.5")


def test_idle_upload_is_abandoned_with_408_and_can_be_retried(impatient_server: Server) -> None:
    """An upload that stops sending is answered 408 after the idle timeout, its temp file
    is removed, and the same provider's next, complete upload is accepted."""
    rnd = _running_round(impatient_server, NORMAL, 600)
    p = rnd.providers[0]
    envelope = rnd.envelope(p)
    started = time.perf_counter()
    with _open_upload(rnd, p, envelope[:1000], declared=len(envelope),
                      signature=p.signature(envelope)) as sock:  # fmt: skip
        assert _status(sock, timeout=15) == 408
    assert 1.0 < time.perf_counter() - started < 10
    _wait(lambda: not impatient_server.temp_files(), 5, "the temp file to go")
    assert rnd.buyer.get_round(rnd.job_id, 1).submitted == 0
    assert rnd.submit(p)[0] == 201
    assert rnd.buyer.get_round(rnd.job_id, 1).submitted == 1


def test_declared_oversize_is_refused_before_the_body(impatient_server: Server) -> None:
    """A Content-Length beyond the largest valid envelope gets 413 at once, without the
    server waiting for (or storing) a single byte of the body."""
    rnd = _running_round(impatient_server, NORMAL, 600)
    with _open_upload(rnd, rnd.providers[0], b"", declared=10**9) as sock:
        started = time.perf_counter()
        assert _status(sock, timeout=5) == 413
        assert time.perf_counter() - started < 3.0
    assert not impatient_server.temp_files()
    assert rnd.buyer.get_round(rnd.job_id, 1).submitted == 0
