"""Jobs from the buyer's side: post, upload context and initial model, fund, cancel, complete.

Each function here is an entry point: its writes commit together (`market.db.unit_of_work`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, select

from crypto import ContextError, Preset, PublicContext, get_preset
from market import blobkeys, weights
from market.blobs import BlobStore, TempBlob
from market.config import Settings
from market.db import unit_of_work
from market.errors import InvalidInputError, InvalidStateError, PermissionDeniedError
from market.lifecycle import JOB_ENDED, ROUND_HAS_AGGREGATE, JobState, RoundState
from market.models import Account, Job, JobCreate, Round
from market.models.types import new_id
from market.services import access, quotas, settlement
from market.services.locks import locked_job
from market.services.rounds import find_round, submitters, withdraw_pending_offers

log = logging.getLogger(__name__)

DEFAULT_MAX_DRAFTS: int = Settings.model_fields["max_draft_jobs_per_buyer"].default


def _checked_preset(
    buyer: Account, spec: JobCreate, *, allow_plaintext: bool, min_round_deadline_s: int
) -> Preset:
    """The spec's preset, once the buyer may post it on this marketplace."""
    if buyer.role != "buyer":
        raise PermissionDeniedError("only buyers post jobs")
    if spec.round_deadline_s < min_round_deadline_s:
        raise InvalidInputError(
            f"round_deadline_s must be at least {min_round_deadline_s} s on this marketplace",
            minimum=min_round_deadline_s,
        )
    preset = get_preset(spec.preset)
    if preset.is_plain and not allow_plaintext:
        raise InvalidInputError(
            f"preset {preset.id} sends updates in the clear; this server refuses it "
            "(only benchmark servers started with POLLEN_ALLOW_PLAINTEXT_JOBS=1 accept it)"
        )
    if spec.max_providers > preset.max_summands:
        raise InvalidInputError(
            f"preset {preset.id} sums at most {preset.max_summands} updates: "
            f"max_providers must not exceed it"
        )
    return preset


def _draft(buyer: Account, spec: JobCreate, preset: Preset, now: datetime) -> Job:
    return Job(
        id=new_id("job"),
        buyer_id=buyer.id,
        title=spec.title,
        spec=spec.model_dump(mode="json", by_alias=True),
        preset_id=preset.id,
        rounds_total=spec.rounds,
        quorum=spec.quorum,
        min_providers=spec.min_providers,
        max_providers=spec.max_providers,
        min_samples=spec.min_samples,
        sample_cap=spec.sample_cap,
        min_reputation=spec.min_reputation,
        budget_cents=spec.budget_cents,
        currency=spec.currency,
        price_cap_cents=spec.price_cap_cents,
        round_deadline_s=spec.round_deadline_s,
        offer_ttl_s=spec.offer_ttl_s,
        created_at=now,
        updated_at=now,
    )


def create_job(
    session: Session,
    buyer: Account,
    spec: JobCreate,
    *,
    now: datetime,
    allow_plaintext: bool = False,
    max_drafts: int = DEFAULT_MAX_DRAFTS,
    min_round_deadline_s: int = 1,
) -> Job:
    """Post a job in `draft`, within the buyer's quota of drafts (409 past it)."""
    preset = _checked_preset(
        buyer, spec, allow_plaintext=allow_plaintext, min_round_deadline_s=min_round_deadline_s
    )
    job = _draft(buyer, spec, preset, now)
    with unit_of_work(session):
        quotas.reserve_draft_job(session, buyer.id, limit=max_drafts)
        session.add(job)
    log.info("buyer %s posted job %s", buyer.id, job.id)
    return job


def _require_draft(job: Job) -> None:
    if job.state != JobState.DRAFT:
        raise InvalidStateError(f"job is {job.state}: its context and model are frozen")


def put_context(session: Session, blobs: BlobStore, job: Job, data: bytes, *, now: datetime) -> Job:
    """Store the buyer's public context; refuses garbage and anything holding a secret key."""
    _require_draft(job)
    ctx = PublicContext.from_bytes(data)
    if not ctx.is_public():  # from_bytes refuses secrets already; never store one regardless
        raise InvalidInputError("the context holds a secret key")
    try:
        ctx = ctx.for_preset(job.preset_id)
    except ContextError:
        raise InvalidInputError(
            f"context is for preset {ctx.preset.id}, job uses {job.preset_id}"
        ) from None
    key = blobkeys.context(job.id, ctx.fingerprint)
    blobs.put_bytes(key, ctx.to_bytes())
    with unit_of_work(session):
        job.context_key = key
        job.fingerprint = ctx.fingerprint
        job.updated_at = now
        session.add(job)
    return job


def put_initial_model(
    session: Session, blobs: BlobStore, job: Job, upload: TempBlob, *, now: datetime
) -> Job:
    """The initial model from a finished upload (moved into the store, never read whole)."""
    _require_draft(job)
    layout = weights.layout_file(upload.path)
    count = sum(math.prod(shape) for shape in layout.values())
    key = blobkeys.round_model(job.id, 1)
    blobs.put_temp(key, upload)
    with unit_of_work(session):
        job.model_key = key
        job.param_count = count
        job.layout = layout
        job.updated_at = now
        session.add(job)
    return job


def put_final_model(
    session: Session, blobs: BlobStore, job: Job, upload: TempBlob, *, now: datetime
) -> Job:
    if job.state not in (JobState.RUNNING, JobState.COMPLETED):
        raise InvalidStateError(f"job is {job.state}")
    assert job.param_count is not None
    weights.check_layout(upload.path, job.layout, job.param_count)
    key = blobkeys.final_model(job.id)
    blobs.put_temp(key, upload)
    with unit_of_work(session):
        job.final_model_key = key
        job.updated_at = now
        session.add(job)
    return job


def request_funding(session: Session, job: Job, *, now: datetime) -> Job:
    """draft → funding; the money arrives through `market.services.funding`."""
    _require_draft(job)
    if job.context_key is None or job.model_key is None:
        raise InvalidStateError("upload the public context and the initial model first")
    with unit_of_work(session):
        job.state = JobState.FUNDING
        job.updated_at = now
        session.add(job)
    return job


def cancel_job(session: Session, job: Job, *, now: datetime, fee_bps: int = 0) -> Job:
    """The buyer stops its job. Work already done is paid first: the collecting round's
    accepted submitters are settled as if it had closed (their sum is never released);
    then `fee_bps` of what is left goes to the platform and the rest is refunded."""
    with locked_job(session, job.id) as job, unit_of_work(session):
        if job.state in JOB_ENDED:
            raise InvalidStateError(f"job is already {job.state}")
        job.state = JobState.CANCELLED
        job.updated_at = now
        session.add(job)
        withdraw_pending_offers(session, job, now=now)
        for rnd in session.exec(
            select(Round).where(Round.job_id == job.id, Round.state == RoundState.COLLECTING)
        ):
            rnd.state = RoundState.CANCELLED
            rnd.closed_at = now
            rnd.close_reason = "cancelled by the buyer"
            # Its accepted submitters are paid; their sum is never built.
            rnd.acc_providers = submitters(session, rnd)
            session.add(rnd)
            if rnd.acc_providers:
                settlement.settle_round(session, job, rnd, now=now)
        settlement.charge_cancel_fee(session, job, fee_bps, now=now)
        settlement.on_job_ended(session, job, now=now)
    log.info("job %s cancelled", job.id)
    return job


def complete_job(session: Session, job: Job, *, now: datetime) -> Job:
    """running → completed, once the last round is closed; leftover escrow is refunded."""
    with locked_job(session, job.id) as job, unit_of_work(session):
        if job.state != JobState.RUNNING:
            raise InvalidStateError(f"job is {job.state}, not running")
        last = find_round(session, job.id, job.rounds_total)
        if last is None or last.state not in ROUND_HAS_AGGREGATE:
            raise InvalidStateError(f"round {job.rounds_total} is not closed yet")
        job.state = JobState.COMPLETED
        job.updated_at = now
        session.add(job)
        settlement.on_job_ended(session, job, now=now)
    return job


def list_jobs(session: Session, viewer: Account) -> Sequence[Job]:
    """The jobs the viewer may see (`access.visible_jobs`)."""
    return access.visible_jobs(session, viewer)
