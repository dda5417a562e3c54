"""Resource limits: registrations per address, per-account quotas, model uploads streamed to
disk, and one envelope upload in flight per provider per round, all across server processes.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.numpy import save
from sqlmodel import Session, func, select

from crypto import BuyerKeys
from market import Settings, create_app
from market.errors import UploadInProgressError
from market.models import Account, Job, Listing, Submission, UploadClaim
from market.services import uploads
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, job_body, listing_body, register
from tests.utils.scenario import dead_upload_claim, running_job


def _app(db_url: str, data_dir: Path, clock: FakeClock, **over: Any) -> FastAPI:
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "admin_api_key": ADMIN_KEY,
        "deadline_tick_s": 0,
        # Processes of one deployment share the blob store as they share the database.
        "blob_dir": data_dir.parent / "blobs",
    }
    fields.update(over)
    app = create_app(Settings(**fields))
    app.state.clock = clock
    return app


@pytest.fixture
def two(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[tuple[TestClient, TestClient]]:
    """Two app instances on one database, as two server processes would be."""
    over = {
        "register_limit": 3,
        "register_window_s": 600,
        "max_listings_per_provider": 3,
        "max_draft_jobs_per_buyer": 2,
    }
    one = _app(db_url, tmp_path / "one", clock, **over)
    other = _app(db_url, tmp_path / "two", clock, auto_migrate=False, **over)
    with TestClient(one) as a, TestClient(other) as b:
        yield a, b


def _count(client: TestClient, model: type[Any], *where: Any) -> int:
    app: Any = client.app
    with Session(app.state.engine) as s:
        return int(s.exec(select(func.count()).select_from(model).where(*where)).one())


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


# ---------------------------------------------------------------- registrations, quotas


def test_registrations_are_limited_per_address_across_processes(
    two: tuple[TestClient, TestClient], clock: FakeClock
) -> None:
    """Past `register_limit` accounts from one address in the window, 429 with Retry-After,
    whichever process answers; nothing is created; another address is unaffected.

    Issue 11: registration was unlimited, so one client could create accounts (and their
    listings) without end.
    """
    a, b = two
    accounts = _count(a, Account)
    for c in (a, b, a):
        assert c.post("/v1/accounts", json={"role": "buyer", "name": "x"}).status_code == 201
    r = b.post("/v1/accounts", json={"role": "provider", "name": "y"})
    body = _problem(r, 429, "too-many-registrations")
    assert int(r.headers["Retry-After"]) == 600 == body["retry_after"]
    assert _count(a, Account) == accounts + 3
    with TestClient(a.app, client=("203.0.113.7", 4000)) as elsewhere:
        assert (
            elsewhere.post("/v1/accounts", json={"role": "buyer", "name": "z"}).status_code == 201
        )
    clock.advance(600)
    assert a.post("/v1/accounts", json={"role": "buyer", "name": "x"}).status_code == 201


def test_listings_quota_per_provider_holds_across_processes(
    two: tuple[TestClient, TestClient],
) -> None:
    """A provider gets at most `max_listings_per_provider` active listings, even sending
    them at once to two processes: the rest get 409 naming the quota and change nothing.

    Issue 11: 4,000 listings from one provider made every listing change re-run matching
    over all of them under a global lock (median 40 ms → 510 ms for everyone).
    """
    a, b = two
    p = register(a, "provider")
    statuses: list[int] = []

    def publish(c: TestClient) -> None:
        statuses.append(c.post("/v1/listings", json=listing_body(), headers=p.headers).status_code)

    threads = [threading.Thread(target=publish, args=(c,)) for c in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 3 + [409] * 5
    assert _count(a, Listing, Listing.provider_id == p.id) == 3
    body = _problem(
        b.post("/v1/listings", json=listing_body(), headers=p.headers), 409, "quota-exceeded"
    )
    assert body["quota"] == "max_listings_per_provider" and body["limit"] == 3
    # Withdrawing one frees its place.
    listing_id = a.get("/v1/listings", headers=p.headers).json()[0]["id"]
    assert a.delete(f"/v1/listings/{listing_id}", headers=p.headers).status_code == 200
    assert b.post("/v1/listings", json=listing_body(), headers=p.headers).status_code == 201


def test_draft_jobs_quota_per_buyer(two: tuple[TestClient, TestClient]) -> None:
    """A buyer holds at most `max_draft_jobs_per_buyer` drafts; the next gets 409 naming the
    quota; cancelling a draft frees its place."""
    a, b = two
    buyer = register(a, "buyer")
    ids = [a.post("/v1/jobs", json=job_body(), headers=buyer.headers).json()["id"] for _ in "xy"]
    body = _problem(
        b.post("/v1/jobs", json=job_body(), headers=buyer.headers), 409, "quota-exceeded"
    )
    assert body["quota"] == "max_draft_jobs_per_buyer" and body["limit"] == 2
    assert _count(a, Job, Job.buyer_id == buyer.id) == 2
    assert b.post(f"/v1/jobs/{ids[0]}/cancel", headers=buyer.headers).status_code == 200
    assert b.post("/v1/jobs", json=job_body(), headers=buyer.headers).status_code == 201


# ---------------------------------------------------------------- model uploads


def _big_model(mib: int) -> bytes:
    return save({"w": np.zeros(mib * 1024 * 1024 // 4, dtype=np.float32)})


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_model_uploads_stream_to_disk(client: TestClient, buyer_keys: BuyerKeys) -> None:
    """A 32 MiB model upload costs the server a small fraction of its size in memory: the
    body is streamed to a temp file and checked from its header, never held whole.

    Issue 11: `read_body` joined the chunks into one bytes object and safetensors loaded
    every tensor; four 50 MiB draft-job uploads took the server from 143 to 387 MiB.
    """
    buyer = register(client, "buyer")
    job_id = client.post("/v1/jobs", json=job_body(), headers=buyer.headers).json()["id"]
    model = _big_model(32)
    app: Any = client.app

    async def upload() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            tracemalloc.start()
            try:
                return await http.put(
                    f"/v1/jobs/{job_id}/model", content=_chunks(model), headers=buyer.headers
                )
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(f"traced peak during a {len(model) >> 20} MiB upload: {peak / 2**20:.1f} MiB")
                assert peak < len(model) / 8, f"peak {peak / 2**20:.1f} MiB"

    r = anyio.run(upload)
    assert r.status_code == 200, r.text
    assert r.json()["param_count"] == 32 * 1024 * 1024 // 4
    # Garbage is still refused, and leaves no file behind.
    tmp = Path(app.state.settings.blob_root) / ".tmp"
    r = client.put(f"/v1/jobs/{job_id}/model", content=b"\x08" + b"\0" * 999, headers=buyer.headers)
    _problem(r, 422, "invalid-input")
    assert list(tmp.glob("*")) == []


# ---------------------------------------------------------------- one upload per slot


class _Gate:
    """An upload body that sends its first chunk, then waits until opened."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.opened = anyio.Event()
        self.started = anyio.Event()
        self.chunks_sent = 0

    async def body(self) -> AsyncIterator[bytes]:
        half = len(self.data) // 2
        self.chunks_sent += 1
        self.started.set()
        yield self.data[:half]
        await self.opened.wait()
        self.chunks_sent += 1
        yield self.data[half:]


class _Counted:
    """An upload body that counts the chunks the server pulled from it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.chunks_sent = 0

    async def body(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 64 * 1024):
            self.chunks_sent += 1
            yield self.data[start : start + 64 * 1024]


def test_second_concurrent_upload_is_refused_before_its_body_is_read(
    db_url: str, tmp_path: Path, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """While a provider's envelope upload is in flight on one process, a second upload for
    the same round, on another process, gets 409 `upload-in-progress` before a byte of its
    body is read; once the first lands, the second is a duplicate (409), and exactly one
    submission exists.

    Issue 11: 100 parallel uploads for one slot were all received, parsed and validated
    before 99 of them got 409.
    """
    one = _app(db_url, tmp_path / "one", clock)
    other = _app(db_url, tmp_path / "two", clock, auto_migrate=False)
    with TestClient(one) as a, TestClient(other):
        scn = running_job(a, clock, buyer_keys)
        provider = scn.providers[0]
        envelope = scn.envelope(provider, 1)
        url = f"/v1/jobs/{scn.job_id}/rounds/1/submission"

        async def race() -> tuple[int, dict[str, Any], int, int, int]:
            first, second = _Gate(envelope), _Counted(envelope)
            results: dict[str, httpx.Response] = {}
            t_one, t_two = httpx.ASGITransport(app=one), httpx.ASGITransport(app=other)
            async with (
                httpx.AsyncClient(transport=t_one, base_url="http://testserver") as h1,
                httpx.AsyncClient(transport=t_two, base_url="http://testserver") as h2,
                anyio.create_task_group() as tg,
            ):

                async def send_first() -> None:
                    results["first"] = await h1.put(
                        url, content=first.body(), headers=provider.headers
                    )

                tg.start_soon(send_first)
                await first.started.wait()
                await anyio.sleep(0.2)  # the first upload is now streaming its body
                r = await h2.put(url, content=second.body(), headers=provider.headers)
                sent_before_refusal = second.chunks_sent
                first.opened.set()
            after = await _put_whole(other, url, envelope, provider.headers)
            return r.status_code, r.json(), sent_before_refusal, results["first"].status_code, after

        status, body, sent, first_status, later_status = anyio.run(race)
        assert (status, body.get("code")) == (409, "upload-in-progress"), body
        assert sent == 0  # refused before its body was read
        assert (first_status, later_status) == (201, 409)  # the first landed; then a duplicate
        assert _count(a, Submission, Submission.provider_id == provider.id) == 1
        assert _count(a, UploadClaim) == 0  # released when the upload ended


async def _put_whole(app: FastAPI, url: str, data: bytes, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        return (await http.put(url, content=data, headers=headers)).status_code


def test_a_stale_claim_is_taken_over(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A claim left by a process that died mid-upload stops nobody once it is older than the
    upload idle timeout; a fresh one still refuses (409)."""
    scn = running_job(client, clock, buyer_keys)
    provider = scn.providers[0]
    app: Any = client.app
    dead_upload_claim(client, scn.job_id, provider.id, clock.now)
    r = scn.submit(provider, 1)
    _problem(r, 409, "upload-in-progress")
    assert int(r.headers["Retry-After"]) == app.state.settings.upload_idle_timeout_s
    clock.advance(app.state.settings.upload_idle_timeout_s + 1)
    assert scn.submit(provider, 1).status_code == 201
    assert _count(client, UploadClaim) == 0


def test_claims_renew_release_and_take_over_only_what_is_theirs(
    client: TestClient, clock: FakeClock
) -> None:
    """A heartbeat keeps a claim live past the idle timeout; a stale one is taken over; the
    old holder's release then leaves the new holder's claim alone."""
    app: Any = client.app
    slot = {"job_id": "job_x", "number": 1, "provider_id": "prv_x"}
    idle = 30.0
    with Session(app.state.engine) as s:
        first = uploads.claim(s, **slot, now=clock.now, stale_after_s=idle)
        clock.advance(idle - 1)
        uploads.heartbeat(s, **slot, token=first, now=clock.now)
        clock.advance(idle - 1)  # 58 s after the claim, 29 s after its heartbeat: still live
        with pytest.raises(UploadInProgressError):
            uploads.claim(s, **slot, now=clock.now, stale_after_s=idle)
        clock.advance(2)
        second = uploads.claim(s, **slot, now=clock.now, stale_after_s=idle)
        uploads.release(s, **slot, token=first)  # the dead holder comes back: no effect
        with pytest.raises(UploadInProgressError):
            uploads.claim(s, **slot, now=clock.now, stale_after_s=idle)
        uploads.release(s, **slot, token=second)
        assert uploads.claim(s, **slot, now=clock.now, stale_after_s=idle)
