"""Per-object authorization shared by the services.

Rule of thumb: an object the caller may not see is reported as 404 (its existence is not
revealed); an object it may see but not act on is 403.

- a buyer sees its own jobs; a provider sees the jobs it has (or had) an offer for; an admin
  sees everything but acts as a buyer on nothing;
- "participant" means an accepted offer: only participants read a job's context and models;
- a provider's reputation history is public, but the jobs it names are shown only to the
  provider itself, operators, and the buyer of each job (`sees_event_details`).
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from market.errors import NotFoundError, PermissionDeniedError
from market.models import Account, Job, Listing, Offer
from market.models.types import could_be_id


def offer_of(session: Session, job_id: str, provider_id: str) -> Offer | None:
    return session.exec(
        select(Offer).where(Offer.job_id == job_id, Offer.provider_id == provider_id)
    ).first()


def is_participant(session: Session, job_id: str, provider_id: str) -> bool:
    offer = offer_of(session, job_id, provider_id)
    return offer is not None and offer.state == "accepted"


def visible_job(session: Session, job_id: str, viewer: Account) -> Job:
    job = session.get(Job, job_id) if could_be_id(job_id) else None
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    if viewer.role == "admin" or (viewer.role == "buyer" and job.buyer_id == viewer.id):
        return job
    if viewer.role == "provider" and offer_of(session, job_id, viewer.id) is not None:
        return job
    raise NotFoundError(f"no job {job_id}")


def owned_job(session: Session, job_id: str, viewer: Account) -> Job:
    """The job, if the viewer is its buyer (403 if it may only look at it)."""
    job = visible_job(session, job_id, viewer)
    if job.buyer_id != viewer.id:
        raise PermissionDeniedError("only the job's buyer may do this")
    return job


def participant_job(session: Session, job_id: str, viewer: Account) -> Job:
    """The job, if the viewer is its buyer or an accepted provider."""
    job = visible_job(session, job_id, viewer)
    if job.buyer_id == viewer.id:
        return job
    if viewer.role == "provider" and is_participant(session, job_id, viewer.id):
        return job
    raise PermissionDeniedError("only the buyer and accepted providers may read this")


def owned_listing(session: Session, listing_id: str, viewer: Account) -> Listing:
    listing = session.get(Listing, listing_id) if could_be_id(listing_id) else None
    if listing is None:
        raise NotFoundError(f"no listing {listing_id}")
    if viewer.role == "admin" or listing.provider_id == viewer.id:
        return listing
    raise NotFoundError(f"no listing {listing_id}")


def sees_event_details(
    session: Session, viewer: Account | None, provider_id: str, job_ids: set[str]
) -> set[str]:
    """Of `job_ids` (jobs named by `provider_id`'s reputation events), those `viewer` may see
    named: all of them for the provider itself and operators, a buyer's own jobs, else none."""
    if viewer is None or not job_ids:
        return set()
    if viewer.role == "admin" or viewer.id == provider_id:
        return set(job_ids)
    if viewer.role != "buyer":
        return set()
    owned = session.exec(
        select(Job.id).where(col(Job.id).in_(sorted(job_ids)), Job.buyer_id == viewer.id)
    ).all()
    return set(owned)
