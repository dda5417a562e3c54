"""Timed uploads of round 1's envelopes, as the load benchmarks make them.

`put_envelope` uploads one envelope and times it; `burst` releases every provider's upload
at once, each on its own connection opened beforehand, so it measures submissions rather
than connects. `Party` is an account as the benchmarks drive it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from agents.client import PollenClient

SUBMIT_TIMEOUT_S = 150.0


@dataclass
class Party:
    client: PollenClient
    id: str
    api_key: str


Outcome = tuple[int | None, float, str]


async def put_envelope(
    client: httpx.AsyncClient, job_id: str, body: bytes, since: float | None = None
) -> Outcome:
    """Upload one envelope into round 1: (status or None, seconds since `since` or since the
    call, the error's detail)."""
    started = time.perf_counter() if since is None else since
    try:
        r = await client.put(
            f"/v1/jobs/{job_id}/rounds/1/submission",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    except httpx.HTTPError as exc:
        return None, time.perf_counter() - started, type(exc).__name__
    detail = "" if r.is_success else r.text[:200]
    return r.status_code, time.perf_counter() - started, detail


async def burst(
    url: str, job_id: str, providers: list[Party], envelopes: list[bytes]
) -> tuple[list[Outcome], float]:
    """Release every submitter at once: (status or None, seconds, detail) per agent, and the
    seconds from the release to the last answer."""
    clients = [
        httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {p.api_key}"},
            limits=httpx.Limits(max_connections=1),
            timeout=SUBMIT_TIMEOUT_S,
        )
        for p in providers
    ]
    try:
        # Open each agent's connection first, so the burst measures submissions, not connects.
        for client in clients:
            (await client.get(f"/v1/jobs/{job_id}/rounds/1")).raise_for_status()
        go = asyncio.Event()

        async def one(client: httpx.AsyncClient, body: bytes) -> Outcome:
            await go.wait()
            return await put_envelope(client, job_id, body)

        tasks = [asyncio.create_task(one(c, e)) for c, e in zip(clients, envelopes, strict=True)]
        await asyncio.sleep(0.05)
        released = time.perf_counter()
        go.set()
        outcomes = list(await asyncio.gather(*tasks))
        return outcomes, time.perf_counter() - released
    finally:
        for client in clients:
            await client.aclose()
