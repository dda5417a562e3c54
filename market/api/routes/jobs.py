"""Jobs: the buyer posts, uploads its public context and initial model, funds, cancels,
completes; everyone allowed to see a job reads its status."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from dataspec.views import JobFunding
from market.api.deps import (
    OCTET,
    BlobsDep,
    BuyerAccount,
    CurrentAccount,
    NowDep,
    RailDep,
    SessionDep,
    SettingsDep,
    binary_body,
    blob_response,
    read_body,
    streamed_upload,
)
from market.errors import NotFoundError
from market.models import JobCreate, JobPublic
from market.models.jobs import MatchingPublic
from market.services import access, jobs, matching, payments, results, views

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobPublic)
def create(
    body: JobCreate, account: BuyerAccount, session: SessionDep, now: NowDep, settings: SettingsDep
) -> JobPublic:
    job = jobs.create_job(
        session,
        account,
        body,
        now=now,
        allow_plaintext=settings.allow_plaintext_jobs,
        max_drafts=settings.max_draft_jobs_per_buyer,
        min_round_deadline_s=settings.min_round_deadline_s,
    )
    return views.job_public(session, job, account)


@router.get("", response_model=list[JobPublic])
def list_(account: CurrentAccount, session: SessionDep) -> list[JobPublic]:
    return [views.job_public(session, j, account) for j in jobs.list_jobs(session, account)]


@router.get("/{job_id}", response_model=JobPublic)
def status(job_id: str, account: CurrentAccount, session: SessionDep) -> JobPublic:
    return views.job_public(session, access.visible_job(session, job_id, account), account)


@router.get("/{job_id}/matching", response_model=MatchingPublic)
def matching_status(
    job_id: str, account: CurrentAccount, session: SessionDep, now: NowDep
) -> MatchingPublic:
    """The job's buyer: how many listings fit the job, and why the others are left out."""
    return matching.explain_job(session, access.owned_job(session, job_id, account), now=now)


@router.put(
    "/{job_id}/context",
    response_model=JobPublic,
    openapi_extra=binary_body("the buyer's public CKKS context (no secret key)"),
)
async def put_context(
    job_id: str,
    request: Request,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    now: NowDep,
) -> JobPublic:
    job = await run_in_threadpool(access.owned_job, session, job_id, account)
    data = await read_body(request, settings.max_context_bytes)
    job = await run_in_threadpool(jobs.put_context, session, blobs, job, data, now=now)
    return await run_in_threadpool(views.job_public, session, job, account)


@router.get("/{job_id}/context", response_class=Response, responses={200: {"content": {OCTET: {}}}})
def get_context(
    job_id: str, account: CurrentAccount, session: SessionDep, blobs: BlobsDep
) -> Response:
    """The job's public context (buyer and accepted providers)."""
    job = access.participant_job(session, job_id, account)
    if job.context_key is None:
        raise NotFoundError(f"job {job_id} has no context yet")
    return Response(blobs.get_bytes(job.context_key), media_type=OCTET)


@router.put(
    "/{job_id}/model",
    response_model=JobPublic,
    openapi_extra=binary_body("the initial global model, safetensors"),
)
async def put_model(
    job_id: str,
    request: Request,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    now: NowDep,
) -> JobPublic:
    job = await run_in_threadpool(access.owned_job, session, job_id, account)
    async with streamed_upload(
        request, blobs, settings.max_model_bytes, idle_timeout_s=settings.upload_idle_timeout_s
    ) as upload:
        job = await run_in_threadpool(jobs.put_initial_model, session, blobs, job, upload, now=now)
    return await run_in_threadpool(views.job_public, session, job, account)


@router.put(
    "/{job_id}/final-model",
    response_model=JobPublic,
    openapi_extra=binary_body("the final model, safetensors"),
)
async def put_final_model(
    job_id: str,
    request: Request,
    account: CurrentAccount,
    session: SessionDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    now: NowDep,
) -> JobPublic:
    job = await run_in_threadpool(access.owned_job, session, job_id, account)
    async with streamed_upload(
        request, blobs, settings.max_model_bytes, idle_timeout_s=settings.upload_idle_timeout_s
    ) as upload:
        job = await run_in_threadpool(jobs.put_final_model, session, blobs, job, upload, now=now)
    return await run_in_threadpool(views.job_public, session, job, account)


@router.get(
    "/{job_id}/final-model", response_class=Response, responses={200: {"content": {OCTET: {}}}}
)
def get_final_model(
    job_id: str, account: CurrentAccount, session: SessionDep, blobs: BlobsDep
) -> Response:
    job = access.participant_job(session, job_id, account)
    return blob_response(results.open_final_model(blobs, job))


@router.post("/{job_id}/fund", response_model=JobFunding)
def fund(
    job_id: str,
    account: CurrentAccount,
    session: SessionDep,
    settings: SettingsDep,
    rail: RailDep,
    now: NowDep,
) -> JobFunding:
    """Ask for funding: the job waits in `funding` until the money arrives (a credit on the
    manual rail, the PaymentIntent's success on the stripe rail; calling again polls it)."""
    job = access.owned_job(session, job_id, account)
    payment = payments.start_funding(session, rail, job, fee_bps=settings.platform_fee_bps, now=now)
    view = views.job_public(session, job, account)
    return JobFunding(
        **view.model_dump(by_alias=False),
        payment=payments.public(payment, with_secret=True) if payment else None,
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(
    job_id: str,
    account: CurrentAccount,
    session: SessionDep,
    rail: RailDep,
    now: NowDep,
    settings: SettingsDep,
) -> JobPublic:
    """Stop the job: the collecting round's accepted submitters are paid for their work,
    then the unspent escrow is refunded (a Stripe Refund on the stripe rail), less the
    platform's cancellation fee if it sets one."""
    job = jobs.cancel_job(
        session,
        access.owned_job(session, job_id, account),
        now=now,
        fee_bps=settings.cancel_fee_bps,
    )
    payments.process_refunds(session, rail, now=now)
    return views.job_public(session, job, account)


@router.post("/{job_id}/complete", response_model=JobPublic)
def complete(
    job_id: str, account: CurrentAccount, session: SessionDep, rail: RailDep, now: NowDep
) -> JobPublic:
    """Finish a job whose last round closed; whatever escrow is left is refunded."""
    job = jobs.complete_job(session, access.owned_job(session, job_id, account), now=now)
    payments.process_refunds(session, rail, now=now)
    return views.job_public(session, job, account)
