"""Timed uploads of round 1's envelopes, as the load benchmarks make them.

`put_envelope` uploads one envelope and times it; `burst` releases every provider's upload
at once, each on its own connection opened beforehand, so it measures submissions rather
than connects. `Party` is an account as the benchmarks drive it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
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


async def put_envelope_lean(
    url: str, api_key: str, job_id: str, body: bytes, since: float
) -> Outcome:
    """`put_envelope` on a connection of its own, with h11 over a bare non-blocking socket:
    the load generator shares the machine with the server it measures, so it sends the body
    straight from its buffer (`loop.sock_sendall`, no copy into a transport's buffer) and
    keeps no client object per upload (an httpx client each cost more CPU than sending the
    megabyte does)."""
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="PUT",
        target=f"/v1/jobs/{job_id}/rounds/1/submission",
        headers=[
            ("Host", f"{host}:{port}"),
            ("Authorization", f"Bearer {api_key}"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(SUBMIT_TIMEOUT_S):
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, conn.send(request) or b"")
            # Passed through as is (`send` would join the body into a new bytes object).
            for piece in conn.send_with_data_passthrough(h11.Data(data=body)) or ():
                await loop.sock_sendall(sock, piece)
            await loop.sock_sendall(sock, conn.send(h11.EndOfMessage()) or b"")
            status, text = await _response(conn, loop, sock)
    except (OSError, TimeoutError, h11.ProtocolError) as exc:
        return None, time.perf_counter() - since, type(exc).__name__
    finally:
        sock.close()
    detail = "" if 200 <= status < 300 else text[:200]
    return status, time.perf_counter() - since, detail


async def _response(
    conn: h11.Connection, loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> tuple[int, str]:
    """The status and body of the answer `conn` is waiting for."""
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await loop.sock_recv(sock, 65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, body.decode(errors="replace")


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
