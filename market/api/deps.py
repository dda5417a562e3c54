"""FastAPI dependencies: session, blob store, clock, the authenticated account and its role;
request bodies streamed to disk, blobs streamed back out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from market import ratelimit
from market.blobs import BlobStore, BlobStream, TempBlob, receive
from market.config import Settings
from market.errors import AuthenticationError, PayloadTooLargeError, PermissionDeniedError
from market.models import Account
from market.payments import PaymentRail
from market.services import accounts


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    engine: Engine = request.app.state.engine
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


def get_rail(request: Request) -> PaymentRail:
    rail: PaymentRail = request.app.state.rail
    return rail


def get_now(request: Request) -> datetime:
    # The clock lives on the app so tests can move time without sleeping.
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
NowDep = Annotated[datetime, Depends(get_now)]
RailDep = Annotated[PaymentRail, Depends(get_rail)]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api_key>`")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_account(request: Request, session: SessionDep, credentials: Credentials) -> Account:
    """The account whose key the request carries; wrong keys count against their address
    (past the limit they get 429; a correct key always passes, see `market.ratelimit`)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("send `Authorization: Bearer <api_key>`")
    try:
        account = accounts.authenticate(session, credentials.credentials)
    except AuthenticationError:
        ratelimit.failed_authentication(request, session)
        raise
    # Give the connection back: the route runs on another worker thread (or awaits a body)
    # and takes one again when it needs it. Holding it across that hop starves the pool
    # under load (see market/db.py).
    session.commit()
    return account


CurrentAccount = Annotated[Account, Depends(current_account)]


def optional_account(
    request: Request, session: SessionDep, credentials: Credentials
) -> Account | None:
    """The caller if it sent a key (which must be valid), else None: for public reads."""
    if credentials is None:
        return None
    return current_account(request, session, credentials)


MaybeAccount = Annotated[Account | None, Depends(optional_account)]


def _role(*roles: str) -> Callable[[Account], Account]:
    def check(account: CurrentAccount) -> Account:
        if account.role not in roles:
            raise PermissionDeniedError(f"this needs a {' or '.join(roles)} account")
        return account

    return check


BuyerAccount = Annotated[Account, Depends(_role("buyer"))]
ProviderAccount = Annotated[Account, Depends(_role("provider"))]
AdminAccount = Annotated[Account, Depends(_role("admin"))]
ProviderOrAdmin = Annotated[Account, Depends(_role("provider", "admin"))]


@asynccontextmanager
async def streamed_upload(
    request: Request, blobs: BlobStore, limit: int, *, idle_timeout_s: float
) -> AsyncIterator[TempBlob]:
    """The request body streamed into a temp blob, never whole in memory: 413 as soon as it
    passes `limit` bytes, 408 once it stalls for `idle_timeout_s`. The temp file is gone when
    the block ends, unless the block moved it into the store (`BlobStore.put_temp`).

    Four 50 MiB models buffered by `read_body` took the server from 143 to 387 MiB.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"upload exceeds the limit of {limit} bytes", limit=limit)
    upload = blobs.temp(limit)
    try:
        await receive(request.stream(), upload, idle_timeout_s=idle_timeout_s)
        await run_in_threadpool(upload.finish)  # fsync here, not on the event loop
        yield upload
    finally:
        upload.discard()


def blob_response(blob: BlobStream) -> StreamingResponse:
    """A model or aggregate download, sent chunk by chunk as the store yields it."""
    return StreamingResponse(
        iter(blob), media_type=OCTET, headers={"content-length": str(blob.size)}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refused with 413 as soon as it passes `limit` bytes.

    Holds the whole body in memory: only for small uploads a parser needs as bytes (the
    public context); models go through `streamed_upload`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"upload exceeds the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"upload exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


# OpenAPI description of raw binary request bodies (FastAPI cannot infer them).
def binary_body(description: str) -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    }


OCTET = "application/octet-stream"
