"""What each viewer may see of a job and its rounds.

The buyer and admins see every provider id; a provider sees only itself in the lists of
accepted, expected and included providers, and never another provider's money.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from market.lifecycle import ROUND_HAS_AGGREGATE
from market.models import Account, Job, JobCreate, JobPublic, Round, RoundPublic, RoundSummary
from market.services import access, groups
from market.services.rounds import participants, submitters


def _visible(ids: list[str], job: Job, viewer: Account) -> list[str]:
    if access.sees_job_in_full(viewer, job):
        return sorted(ids)
    return [i for i in ids if i == viewer.id]


def _included(rnd: Round) -> list[str]:
    """Who is inside the round's sum, once it is closed (as the sum itself lists them)."""
    return list(rnd.acc_providers) if rnd.state in ROUND_HAS_AGGREGATE else []


def round_public(session: Session, job: Job, rnd: Round, viewer: Account) -> RoundPublic:
    done = submitters(session, rnd)
    return RoundPublic(
        job_id=job.id,
        round=rnd.number,
        state=rnd.state,
        attempt=rnd.attempt,
        deadline=rnd.deadline,
        expected_count=len(rnd.expected),
        expected_providers=_visible(list(rnd.expected), job, viewer),
        submitted=rnd.acc_count,
        included=_visible(_included(rnd), job, viewer),
        you_submitted=(viewer.id in done) if viewer.role == "provider" else None,
        weight_norm=rnd.weight_norm,
        param_count=job.param_count or 0,
        quorum=job.quorum,
        summands=job.max_providers,
        metrics=rnd.metrics,
        close_reason=rnd.close_reason,
        groups=groups.public(session, rnd, viewer.id, access.sees_job_in_full(viewer, job)),
    )


def job_public(session: Session, job: Job, viewer: Account) -> JobPublic:
    rounds = session.exec(
        select(Round).where(Round.job_id == job.id).order_by(col(Round.number))
    ).all()
    accepted = [o.provider_id for o in participants(session, job.id)]
    return JobPublic(
        id=job.id,
        buyer_id=job.buyer_id,
        title=job.title,
        state=job.state,
        spec=JobCreate.model_validate(job.spec),
        rounds_total=job.rounds_total,
        current_round=job.current_round,
        accepted_providers=_visible(accepted, job, viewer),
        param_count=job.param_count,
        fingerprint=job.fingerprint,
        budget_cents=job.budget_cents,
        funded_cents=job.funded_cents if access.sees_job_in_full(viewer, job) else None,
        currency=job.currency,
        failure_reason=job.failure_reason,
        has_final_model=job.final_model_key is not None,
        rounds=[
            RoundSummary(
                round=r.number,
                state=r.state,
                attempt=r.attempt,
                deadline=r.deadline,
                submitted=r.acc_count,
                included=_visible(_included(r), job, viewer),
                metrics=r.metrics,
            )
            for r in rounds
        ],
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
