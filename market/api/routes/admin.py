"""Operator endpoints: crediting a job's funding on the manual rail, forcing a deadline pass."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from market.api.deps import AdminAccount, NowDep, SessionDep
from market.errors import NotFoundError
from market.models import CreditCreate, CreditPublic, Job
from market.models.types import could_be_id
from market.services import funding, rounds

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


class TickResult(BaseModel):
    rounds_checked: int


@router.post("/tick", response_model=TickResult)
def tick(account: AdminAccount, session: SessionDep, now: NowDep) -> TickResult:
    """Run the deadline enforcer now (it also runs in the background)."""
    return TickResult(rounds_checked=rounds.tick(session, now=now))
