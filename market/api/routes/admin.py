"""Operator endpoints: crediting a job's funding on the manual rail, forcing a deadline pass,
approving and revoking providers (only verified providers are matched, see
`market.services.verification`)."""

from __future__ import annotations

from fastapi import APIRouter

from dataspec.views import TickResult
from market.api.deps import AdminAccount, NowDep, SessionDep
from market.errors import NotFoundError
from market.models import AccountPublic, CreditCreate, CreditPublic, Job
from market.models.types import could_be_id
from market.services import accounts, funding, rounds, verification

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/jobs/{job_id}/credit", response_model=CreditPublic)
def credit(
    job_id: str, body: CreditCreate, account: AdminAccount, session: SessionDep, now: NowDep
) -> CreditPublic:
    """Credit money received for a job; at the budget the job opens and matching runs."""
    job = session.get(Job, job_id) if could_be_id(job_id) else None
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return funding.credit(
        session, account, job, body.amount_cents, reference=body.reference, now=now
    )


@router.post("/tick", response_model=TickResult)
def tick(account: AdminAccount, session: SessionDep, now: NowDep) -> TickResult:
    """Run the deadline enforcer now (it also runs in the background)."""
    return TickResult(rounds_checked=rounds.tick(session, now=now))


@router.post("/providers/{provider_id}/approve", response_model=AccountPublic)
def approve_provider(
    provider_id: str, account: AdminAccount, session: SessionDep, now: NowDep
) -> AccountPublic:
    """Vouch for a provider: from now on it is matched to jobs and counts toward quorums."""
    return accounts.public(verification.approve(session, account, provider_id, now=now))


@router.post("/providers/{provider_id}/revoke", response_model=AccountPublic)
def revoke_provider(
    provider_id: str, account: AdminAccount, session: SessionDep, now: NowDep
) -> AccountPublic:
    """Withdraw a provider's verification: no new offers; its pending offers are withdrawn."""
    return accounts.public(verification.revoke(session, account, provider_id, now=now))
