"""Matching as a service: load open jobs and active listings, run `market.matching.match`,
persist the proposals as offers.

Runs when a job opens, when listings change, when an offer is declined or expires, and for a
running job whose round is retried (to fill the places of providers that missed it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from market.db import AdvisoryLock, advisory_xact_lock, in_unit_of_work
from market.lifecycle import JOB_ENDED, JobState, ListingState, OfferState
from market.matching import Demand, Explanation, SchemaShape, Supply, explain, match
from market.models import LIVE_OFFER_STATES, Job, Listing, Offer
from market.models.jobs import MatchingExclusion, MatchingPublic
from market.models.types import new_id
from market.services import reputation, verification

log = logging.getLogger(__name__)

# Offers in these states still cost budget (dropped ones for the rounds they were in).
_SPENDING_OFFER_STATES = (*LIVE_OFFER_STATES, OfferState.DROPPED)


def rounds_left(job: Job) -> int:
    """Rounds a provider joining now would train in."""
    return job.rounds_total - max(job.current_round, 1) + 1


# Two matching passes at once (say two listings published in the same instant) would both
# see "no offer yet" and both propose one: passes are serialized, within the process by this
# lock and across processes on PostgreSQL by an advisory lock.
_matching_lock = threading.Lock()


def run_matching(session: Session, *, now: datetime, job_ids: Sequence[str] = ()) -> list[str]:
    """Send offers for every open job, plus the running jobs in `job_ids`; returns the new
    offers' ids.

    A pass is its own transaction in its own session, committed before the lock is released
    (a pass waiting for it must see its offers); it never commits the caller's work. Entry
    points call it after their unit of work. Called inside one (a round's retry, deciding
    under the job's lock), the pass is deferred until that work commits, and returns no ids;
    a rollback drops it with the work that asked for it.
    """
    if in_unit_of_work(session):
        session.info.setdefault(_DEFERRED, []).append((now, tuple(job_ids)))
        return []
    return _pass(session.get_bind(), now=now, job_ids=job_ids)


_DEFERRED = "pollen.matching_after_commit"


def _pass(bind: Any, *, now: datetime, job_ids: Sequence[str]) -> list[str]:
    with _matching_lock, Session(bind) as own:
        advisory_xact_lock(own, AdvisoryLock.MATCHING)
        return _run_matching(own, now=now, job_ids=job_ids)


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    for now, job_ids in session.info.pop(_DEFERRED, ()):
        try:
            _pass(session.get_bind(), now=now, job_ids=job_ids)
        except Exception:  # the work that asked for it stands; the next pass fills its places
            log.exception("matching pass deferred to the commit failed")


@event.listens_for(OrmSession, "after_rollback")
def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_DEFERRED, None)


def _run_matching(session: Session, *, now: datetime, job_ids: Sequence[str]) -> list[str]:
    cond = col(Job.state) == JobState.OPEN
    if job_ids:
        cond = cond | ((col(Job.state) == JobState.RUNNING) & col(Job.id).in_(list(job_ids)))
    jobs = list(session.exec(select(Job).where(cond).order_by(col(Job.created_at), col(Job.id))))
    if not jobs:
        return []
    offers = session.exec(select(Offer).where(col(Offer.job_id).in_([j.id for j in jobs]))).all()
    by_job: dict[str, list[Offer]] = {}
    for o in offers:
        by_job.setdefault(o.job_id, []).append(o)
    demands = [_demand(job, by_job.get(job.id, [])) for job in jobs]
    supplies = _supplies(session, now=now)
    proposals = match(demands, supplies)
    jobs_by_id = {j.id: j for j in jobs}
    rows = [
        {
            "id": new_id("off"),
            "job_id": p.job_id,
            "listing_id": p.listing_id,
            "provider_id": p.provider_id,
            "state": OfferState.PENDING,
            "price_cents": p.price_cents,
            "currency": jobs_by_id[p.job_id].currency,
            "samples": p.samples,
            "value": p.value,
            "rounds_committed": p.rounds,
            "expires_at": now + timedelta(seconds=jobs_by_id[p.job_id].offer_ttl_s),
            "created_at": now,
            "decided_at": None,
        }
        for p in proposals
    ]
    # A Core bulk insert: thousands of offers must not cost thousands of ORM objects.
    if rows:
        session.execute(insert(Offer), rows)
    session.commit()  # under the lock: the next pass must see these offers
    if rows:
        log.info("matching sent %d offers to %d jobs", len(rows), len(jobs))
    return [str(r["id"]) for r in rows]


def _demand(job: Job, offers: list[Offer]) -> Demand:
    live = sum(1 for o in offers if o.state in LIVE_OFFER_STATES)
    spent = sum(
        o.price_cents * o.rounds_committed for o in offers if o.state in _SPENDING_OFFER_STATES
    )
    return Demand(
        job_id=job.id,
        schema=SchemaShape.from_schema(job.spec["schema"]),
        min_samples=job.min_samples,
        sample_cap=job.sample_cap,
        min_reputation=job.min_reputation,
        price_cap_cents=job.price_cap_cents,
        currency=job.currency,
        rounds=rounds_left(job),
        slots=job.max_providers - live,
        budget_left_cents=job.budget_cents - spent,
        excluded_providers=frozenset(o.provider_id for o in offers),
        require_verified=verification.required(),
    )


def explain_job(session: Session, job: Job, *, now: datetime) -> MatchingPublic:
    """Why the active listings are or are not offered `job` (counts by reason); reads only."""
    offers = list(session.exec(select(Offer).where(col(Offer.job_id) == job.id)))
    report: Explanation = explain(_demand(job, offers), _supplies(session, now=now, keep_full=True))
    states: dict[str, int] = {}
    for o in offers:
        states[o.state] = states.get(o.state, 0) + 1
    return MatchingPublic(
        job_id=job.id,
        state=job.state,
        listings=report.listings,
        eligible=report.eligible,
        offers=states,
        min_providers=job.min_providers,
        excluded=[
            MatchingExclusion(reason=r, listings=n)
            for r, n in sorted(report.excluded.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    )


def _active_listings(
    session: Session,
) -> Sequence[Row[str, str, dict[str, Any], int, int, str, int]]:
    """Every active listing's id, provider, schema, samples, ask, currency and capacity."""
    # Plain columns, not ORM objects: this loads every active listing on each pass.
    return (
        session.connection()
        .execute(
            sa_select(
                col(Listing.id),
                col(Listing.provider_id),
                col(Listing.dataset_schema),
                col(Listing.samples),
                col(Listing.ask_cents),
                col(Listing.currency),
                col(Listing.capacity),
            )
            .where(col(Listing.state) == ListingState.ACTIVE)
            .order_by(col(Listing.id))
        )
        .all()
    )


def _live_offers_per_listing(session: Session) -> dict[str, int]:
    """How many places of each listing live offers on jobs not ended hold."""
    return dict(
        session.exec(
            select(Offer.listing_id, func.count())
            .join(Job, col(Job.id) == col(Offer.job_id))
            .where(col(Offer.state).in_(LIVE_OFFER_STATES))
            .where(col(Job.state).not_in(sorted(JOB_ENDED)))
            .group_by(col(Offer.listing_id))
        ).all()
    )


def _supplies(session: Session, *, now: datetime, keep_full: bool = False) -> list[Supply]:
    listings = _active_listings(session)
    used = _live_offers_per_listing(session)
    # The service's clock: events age by the time the service keeps, as everywhere else.
    reps = reputation.scores(session, {row[1] for row in listings}, now=now)
    verified = verification.verified_ids(session, (row[1] for row in listings))
    shapes: dict[str, SchemaShape] = {}
    supplies = []
    for listing_id, provider_id, schema, samples, ask, currency, capacity in listings:
        free = capacity - int(used.get(listing_id, 0))
        if free <= 0 and not keep_full:
            continue
        shape = SchemaShape.from_schema(schema)
        shape = shapes.setdefault(shape.key, shape)
        supplies.append(
            Supply(
                listing_id=listing_id,
                provider_id=provider_id,
                schema=shape,
                samples=samples,
                ask_cents=ask,
                currency=currency,
                free_capacity=free,
                reputation=reps[provider_id],
                verified=provider_id in verified,
            )
        )
    return supplies
