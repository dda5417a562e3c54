"""Funding a job: the manual rail, where an operator credits money received off-platform.

Each credit is also a ledger transaction (clearing → the job's escrow, key `credit:<id>`),
in the same database transaction. When the credited total reaches the budget the job opens
and matching runs. The Stripe rail arrives through `market.payments.service.apply_funding`,
which shares `open_if_funded`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, select

from market.db import unit_of_work
from market.errors import ConflictError, InvalidStateError, PermissionDeniedError
from market.lifecycle import JOB_FUNDABLE, JobState
from market.models import Account, Credit, CreditPublic, Job
from market.models.types import new_id
from market.services import settlement
from market.services.matching import run_matching

log = logging.getLogger(__name__)


def _public(credit: Credit, job: Job) -> CreditPublic:
    return CreditPublic(
        id=credit.id,
        job_id=credit.job_id,
        amount_cents=credit.amount_cents,
        reference=credit.reference,
        funded_cents=job.funded_cents,
        job_state=job.state,
        created_at=credit.created_at,
    )


def open_if_funded(session: Session, job: Job, amount_cents: int, *, now: datetime) -> bool:
    """Count received money on the job; `funding` → `open` at the budget (the caller
    commits)."""
    job.funded_cents += amount_cents
    job.updated_at = now
    opened = job.state == JobState.FUNDING and job.funded_cents >= job.budget_cents
    if opened:
        job.state = JobState.OPEN
    session.add(job)
    return opened


def credit(
    session: Session,
    admin: Account,
    job: Job,
    amount_cents: int,
    *,
    reference: str | None,
    now: datetime,
) -> CreditPublic:
    """Credit a job; the same `reference` twice returns the first credit unchanged."""
    if admin.role != "admin":
        raise PermissionDeniedError("only an operator credits funding")
    if reference is not None:
        first = session.exec(select(Credit).where(Credit.reference == reference)).first()
        if first is not None:
            if first.job_id != job.id or first.amount_cents != amount_cents:
                raise ConflictError(f"reference {reference!r} was used for another credit")
            return _public(first, job)
    if job.state not in JOB_FUNDABLE:
        raise InvalidStateError(f"job is {job.state}: it cannot receive funds")
    entry = Credit(
        id=new_id("crd"),
        job_id=job.id,
        amount_cents=amount_cents,
        reference=reference,
        admin_id=admin.id,
        created_at=now,
    )
    with unit_of_work(session):
        session.add(entry)
        settlement.record_funding(
            session, job, amount_cents, key=f"credit:{entry.id}", source="manual", now=now
        )
        opened = open_if_funded(session, job, amount_cents, now=now)
    log.info("job %s credited %d %s", job.id, amount_cents, job.currency)
    if opened:
        run_matching(session, now=now)
    return _public(entry, job)
