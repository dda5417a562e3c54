"""Offers from the provider's side: list, accept, decline; the job starts at `min_providers`.

`accept`, `decline` and `withdraw` are entry points: each decides under the job's lock in
one unit of work (`market.db.unit_of_work`), then runs matching in its own transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from market.db import unit_of_work
from market.errors import InvalidStateError, NotFoundError, OfferExpiredError
from market.lifecycle import JobState, OfferState, RoundState
from market.models import Account, Job, Offer, OfferPublic, Submission
from market.models.types import could_be_id
from market.services import reputation
from market.services.locks import locked_job
from market.services.matching import run_matching
from market.services.rounds import check_round, find_round, join_round, participants, start_job

log = logging.getLogger(__name__)


def public(offer: Offer, job: Job) -> OfferPublic:
    return OfferPublic.model_validate(
        {**offer.model_dump(), "job_title": job.title, "rounds": offer.rounds_committed}
    )


def list_offers(session: Session, viewer: Account) -> list[OfferPublic]:
    stmt = select(Offer, Job).join(Job, col(Job.id) == col(Offer.job_id))
    if viewer.role != "admin":
        stmt = stmt.where(Offer.provider_id == viewer.id)
    rows = session.exec(stmt.order_by(col(Offer.created_at), col(Offer.id))).all()
    return [public(o, j) for o, j in rows]


def _own_pending(session: Session, offer_id: str, provider: Account, now: datetime) -> Offer:
    offer = session.get(Offer, offer_id) if could_be_id(offer_id) else None
    if offer is None or offer.provider_id != provider.id:
        raise NotFoundError(f"no offer {offer_id}")
    if offer.state == OfferState.PENDING and offer.expires_at <= now:
        offer.state = OfferState.EXPIRED
        offer.decided_at = now
        session.add(offer)
        session.commit()  # the expiry stands although this call is refused just below
    if offer.state == OfferState.EXPIRED:
        raise OfferExpiredError(f"offer {offer_id} expired at {offer.expires_at.isoformat()}")
    if offer.state != OfferState.PENDING:
        raise InvalidStateError(f"offer {offer_id} is {offer.state}")
    return offer


def accept(session: Session, offer_id: str, provider: Account, *, now: datetime) -> Offer:
    job_id = _own_pending(session, offer_id, provider, now).job_id
    with locked_job(session, job_id) as job, unit_of_work(session):
        # Checked again under the job's lock: a concurrent accept may have decided already.
        offer = _own_pending(session, offer_id, provider, now)
        if job.state not in (JobState.OPEN, JobState.RUNNING):
            raise InvalidStateError(f"job is {job.state}")
        offer.state = OfferState.ACCEPTED
        offer.decided_at = now
        session.add(offer)
        if job.state == JobState.OPEN and len(participants(session, job.id)) >= job.min_providers:
            start_job(session, job, now=now)  # the acceptance and round 1, together
        elif job.state == JobState.RUNNING:
            join_round(session, job, offer)
    log.info("provider %s accepted job %s", provider.id, job_id)
    return offer


def decline(session: Session, offer_id: str, provider: Account, *, now: datetime) -> Offer:
    """Refuse a pending offer; refusing one already accepted withdraws from the job, which
    costs reputation."""
    mine = session.get(Offer, offer_id) if could_be_id(offer_id) else None
    if mine is not None and mine.provider_id == provider.id and mine.state == OfferState.ACCEPTED:
        return withdraw(session, mine, now=now)
    job_id = _own_pending(session, offer_id, provider, now).job_id
    with locked_job(session, job_id), unit_of_work(session):
        offer = _own_pending(session, offer_id, provider, now)
        offer.state = OfferState.DECLINED
        offer.decided_at = now
        session.add(offer)
    run_matching(session, now=now, job_ids=[offer.job_id])
    return offer


def offers_for_job(session: Session, job_id: str) -> Sequence[Offer]:
    return session.exec(select(Offer).where(Offer.job_id == job_id)).all()


def withdraw(session: Session, offer: Offer, *, now: datetime) -> Offer:
    """An accepted provider backs out: dropped from the job (paid for the rounds it was
    included in), out of the collecting round if it has not submitted, a negative event."""
    with locked_job(session, offer.job_id) as job, unit_of_work(session):
        if offer.state != OfferState.ACCEPTED:  # re-read under the lock: withdrawn meanwhile?
            raise InvalidStateError(f"offer {offer.id} is {offer.state}")
        if job.state not in (JobState.OPEN, JobState.RUNNING):
            raise InvalidStateError(f"job is {job.state}")
        done = session.exec(
            select(Submission).where(
                Submission.job_id == job.id, Submission.provider_id == offer.provider_id
            )
        ).all()
        offer.state = OfferState.DROPPED
        offer.decided_at = now
        offer.rounds_committed = len(done)
        session.add(offer)
        rnd = find_round(session, job.id, job.current_round)
        submitted = rnd is not None and any(s.round_id == rnd.id for s in done)
        if rnd is not None and rnd.state == RoundState.COLLECTING and not submitted:
            rnd.expected = [p for p in rnd.expected if p != offer.provider_id]
            session.add(rnd)
        reputation.record(
            session, offer.provider_id, "refused-after-accept",
            f"withdrew from job {job.id} after accepting its offer",
            key=f"rep:{offer.id}:withdrawn", now=now, job_id=job.id,
        )  # fmt: skip
        if rnd is not None:
            # Everyone still expected may be in already: the round closes now.
            check_round(session, job, rnd, now=now)
    log.info("provider %s withdrew from job %s", offer.provider_id, job.id)
    run_matching(session, now=now, job_ids=[job.id])
    return offer
