"""What a client puts on the wire, for tests that search it for bytes that must not be there."""

from __future__ import annotations

import httpx


def wire_bytes(request: httpx.Request) -> bytes:
    """The request line, every header and the whole body, as sent."""
    body = request.read()
    head = f"{request.method} {request.url}\n".encode()
    head += b"".join(k + b": " + v + b"\n" for k, v in request.headers.raw)
    return head + body
