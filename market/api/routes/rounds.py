"""Rounds: status, global models, encrypted submissions, the aggregate and the metrics.

No route here, or anywhere, returns an individual envelope.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import Session

from market.api.deps import (
    OCTET,
    BlobsDep,
    CurrentAccount,
    NowDep,
    SessionDep,
    SettingsDep,
    binary_body,
    blob_response,
    streamed_upload,
)
from market.blobs import BlobStore, TempBlob, receive
from market.db import ConnectionTurn
from market.errors import PayloadTooLargeError
from market.models import (
    Account,
    GroupValuesCreate,
    Job,
    MetricsCreate,
    RoundPublic,
    SubmissionReceipt,
)
from market.services import access, results, rounds, submissions, uploads, views

router = APIRouter(prefix="/v1/jobs/{job_id}/rounds", tags=["rounds"])

RoundNo = Annotated[int, Path(ge=1, le=1000)]


async def _connection_turn() -> AsyncIterator[ConnectionTurn]:
    turn = ConnectionTurn()
    await turn.acquire()
    try:
        yield turn
    finally:
        turn.release()


# Taken before the session is first used; see market.db on why.
Turn = Annotated[ConnectionTurn, Depends(_connection_turn)]


@router.get("/{number}", response_model=RoundPublic)
def get(
    job_id: str, number: RoundNo, account: CurrentAccount, session: SessionDep, now: NowDep
) -> RoundPublic:
    job = access.visible_job(session, job_id, account)
    return views.round_public(session, job, rounds.load_round(session, job, number), account)


@router.get("/{number}/model", response_class=Response, responses={200: {"content": {OCTET: {}}}})
def get_model(
    job_id: str,
    number: RoundNo,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    now: NowDep,
) -> Response:
    """Round `number`'s global model, safetensors (buyer and accepted providers)."""
    job = access.participant_job(session, job_id, account)
    return blob_response(results.open_round_model(session, blobs, job, number, now=now))


@router.put(
    "/{number}/model",
    response_model=RoundPublic,
    status_code=201,
    openapi_extra=binary_body("the global model for this round, safetensors"),
)
async def publish_model(
    job_id: str,
    number: RoundNo,
    request: Request,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    now: NowDep,
) -> RoundPublic:
    """Publish the next global model: the previous (closed) round becomes `published`."""
    job = await run_in_threadpool(access.owned_job, session, job_id, account)
    async with streamed_upload(
        request, blobs, settings.max_model_bytes, idle_timeout_s=settings.upload_idle_timeout_s
    ) as upload:
        rnd = await run_in_threadpool(
            rounds.publish_model, session, blobs, job, number, upload, now=now
        )
    return await run_in_threadpool(views.round_public, session, job, rnd, account)


@router.put(
    "/{number}/submission",
    response_model=SubmissionReceipt,
    status_code=201,
    openapi_extra=binary_body("an encrypted update envelope (crypto.encrypt_update)"),
)
async def submit(
    job_id: str,
    number: RoundNo,
    turn: Turn,  # before the account: authenticating takes the session's connection
    request: Request,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    now: NowDep,
) -> SubmissionReceipt:
    """A provider's encrypted update, streamed to the blob store and added to the round's sum.

    One upload per provider and round at a time, in every server process together: a second
    one meanwhile gets 409 `upload-in-progress` before its body is read (`services.uploads`).
    """
    idle_s = settings.upload_idle_timeout_s
    try:
        job, limit, token = await run_in_threadpool(
            _precheck_and_claim, session, job_id, number, account, now, idle_s
        )
    finally:
        turn.release()
    slot = _Slot(request.app.state.engine, request.app.state.clock, job.id, number, account.id)
    try:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"envelope exceeds {limit} bytes", limit=limit)
        upload = blobs.temp(limit)
        try:
            body = slot.beating(request.stream(), token, every_s=idle_s / 3)
            await receive(body, upload, idle_timeout_s=idle_s)
            # Parsing an envelope costs a few times its size in memory: only a few at a time,
            # on their own threads, so waiting uploads hold neither memory nor an API thread.
            signature = request.headers.get("pollen-signature")
            return await anyio.to_thread.run_sync(
                _submit, session, blobs, job, number, account, upload, now, signature,
                limiter=submissions.validation_limiter(),
            )  # fmt: skip
        finally:
            upload.discard()
    finally:
        await run_in_threadpool(slot.release, token)


def _precheck_and_claim(
    session: Session, job_id: str, number: int, account: Account, now: datetime, idle_s: float
) -> tuple[Job, int, str]:
    try:
        job, limit = submissions.precheck(session, job_id, number, account, now=now)
        # Its own session: a refused insert's rollback would expire the loaded job.
        with Session(session.get_bind()) as claims:
            token = uploads.claim(
                claims, job_id=job.id, number=number, provider_id=account.id, now=now,
                stale_after_s=idle_s,
            )  # fmt: skip
        return job, limit, token
    finally:
        # The body may take minutes to arrive: no database connection is held meanwhile.
        session.close()


@dataclass(frozen=True)
class _Slot:
    """This upload's claim on (job, round, provider), renewed and released in short
    sessions of their own: the request's session holds no connection while the body comes."""

    engine: Engine
    clock: Callable[[], datetime]
    job_id: str
    number: int
    provider_id: str

    async def beating(
        self, chunks: AsyncIterator[bytes], token: str, *, every_s: float
    ) -> AsyncIterator[bytes]:
        """`chunks`, renewing the claim's heartbeat at most every `every_s` seconds."""
        last = time.monotonic()
        async for chunk in chunks:
            if time.monotonic() - last >= every_s:
                await run_in_threadpool(self._beat, token)
                last = time.monotonic()
            yield chunk

    def _beat(self, token: str) -> None:
        with Session(self.engine) as s:
            uploads.heartbeat(
                s, job_id=self.job_id, number=self.number, provider_id=self.provider_id,
                token=token, now=self.clock(),
            )  # fmt: skip

    def release(self, token: str) -> None:
        with Session(self.engine) as s:
            uploads.release(
                s, job_id=self.job_id, number=self.number, provider_id=self.provider_id,
                token=token,
            )  # fmt: skip


def _submit(
    session: Session,
    blobs: BlobStore,
    job: Job,
    number: int,
    account: Account,
    upload: TempBlob,
    now: datetime,
    signature: str | None = None,
) -> SubmissionReceipt:
    try:
        # fsync: the envelope is kept (renamed into the blob store) until the round's sum holds it
        upload.finish()
        return submissions.submit(
            session, blobs, job, number, account, upload, now=now, signature=signature
        )
    finally:
        # Back to the pool on this thread, not after the response in another one.
        session.close()


@router.get(
    "/{number}/aggregate", response_class=Response, responses={200: {"content": {OCTET: {}}}}
)
def aggregate(
    job_id: str,
    number: RoundNo,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    now: NowDep,
) -> Response:
    """The round's encrypted sum (buyer only; closed round with at least `quorum` updates)."""
    job = access.owned_job(session, job_id, account)
    return blob_response(results.open_aggregate(session, blobs, job, number, now=now))


@router.get(
    "/{number}/groups/{index}/aggregate",
    response_class=Response,
    responses={200: {"content": {OCTET: {}}}},
)
def group_aggregate(
    job_id: str,
    number: RoundNo,
    index: Annotated[int, Path(ge=0, le=10_000)],
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
) -> Response:
    """One random group's encrypted sum (buyer only; closed round; every group ≥ quorum)."""
    job = access.owned_job(session, job_id, account)
    return blob_response(results.open_group_aggregate(session, blobs, job, number, index))


@router.post("/{number}/groups", response_model=RoundPublic)
def group_values(
    job_id: str,
    number: RoundNo,
    body: GroupValuesCreate,
    account: CurrentAccount,
    session: SessionDep,
) -> RoundPublic:
    """The buyer's evaluation of each group's average update (loss before and after, and
    whether it left the group out of its model step); recorded once, shown to every party."""
    job = access.owned_job(session, job_id, account)
    rnd = results.record_group_values(session, job, number, body)
    return views.round_public(session, job, rnd, account)


@router.post("/{number}/metrics", response_model=RoundPublic)
def metrics(
    job_id: str,
    number: RoundNo,
    body: MetricsCreate,
    account: CurrentAccount,
    session: SessionDep,
    now: NowDep,
) -> RoundPublic:
    job = access.owned_job(session, job_id, account)
    rnd = results.record_metrics(session, job, number, body, now=now)
    return views.round_public(session, job, rnd, account)
