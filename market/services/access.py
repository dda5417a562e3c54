"""Per-object authorization shared by the services.

Rule of thumb: an object the caller may not see is reported as 404 (its existence is not
revealed); an object it may see but not act on is 403.

- a buyer sees its own jobs; a provider sees the jobs it has (or had) an offer for; an admin
  sees everything but acts as a buyer on nothing;
- "participant" means an accepted offer: only participants read a job's context and models;
- a provider's reputation history is public, but the jobs it names are shown only to the
  provider itself, operators, and the buyer of each job (`sees_event_details`);
- a job's money and its full list of providers are for its buyer and admins
  (`sees_job_in_full`); a provider's money for the provider itself and admins
  (`sees_provider_money`); the ledger's totals for admins (`sees_ledger_totals`), and its
  journal as far as the viewer's money goes (`journal_scope`);
- a transparency-log record is read in full by admins and the parties it concerns
  (`may_read_leaf`); a money record (settlement, payout) only by its payer and payees
  (`concerns_money_record`).

Services, routes and pages ask here; none decides visibility by itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from market.errors import NotFoundError, PermissionDeniedError
from market.ledger.names import provider_paid, provider_payable
from market.lifecycle import OfferState
from market.models import Account, Job, Listing, Offer
from market.models.translog import LogLeaf
from market.models.types import could_be_id

# Log records about money: read by their payer and payees (and admins) only.
MONEY_KINDS = ("settlement", "payout")


def offer_of(session: Session, job_id: str, provider_id: str) -> Offer | None:
    return session.exec(
        select(Offer).where(Offer.job_id == job_id, Offer.provider_id == provider_id)
    ).first()


def is_participant(session: Session, job_id: str, provider_id: str) -> bool:
    offer = offer_of(session, job_id, provider_id)
    return offer is not None and offer.state == OfferState.ACCEPTED


def _visible(session: Session, job_id: str, viewer: Account) -> tuple[Job, Offer | None]:
    """The job the viewer may see, with the viewer's offer for it when it is a provider
    (read once: an upload asks both whether the job is visible and whether it takes part)."""
    job = session.get(Job, job_id) if could_be_id(job_id) else None
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    if viewer.role == "admin" or (viewer.role == "buyer" and job.buyer_id == viewer.id):
        return job, None
    offer = offer_of(session, job_id, viewer.id) if viewer.role == "provider" else None
    if offer is not None:
        return job, offer
    raise NotFoundError(f"no job {job_id}")


def visible_job(session: Session, job_id: str, viewer: Account) -> Job:
    return _visible(session, job_id, viewer)[0]


def visible_jobs(session: Session, viewer: Account) -> Sequence[Job]:
    """Every job `visible_job` would return to the viewer, oldest first."""
    stmt = select(Job).order_by(col(Job.created_at), col(Job.id))
    if viewer.role == "buyer":
        stmt = stmt.where(Job.buyer_id == viewer.id)
    elif viewer.role == "provider":
        stmt = stmt.where(
            col(Job.id).in_(select(Offer.job_id).where(Offer.provider_id == viewer.id))
        )
    return session.exec(stmt).all()


def sees_job_in_full(viewer: Account, job: Job) -> bool:
    """The buyer and admins see a job's money and every provider; a provider only itself."""
    return viewer.role == "admin" or viewer.id == job.buyer_id


def buyer_or_admin_job(session: Session, job_id: str, viewer: Account, refusal: str) -> Job:
    """The job, if the viewer is its buyer or an admin (404 if it may not see it, else 403
    with `refusal`)."""
    job = visible_job(session, job_id, viewer)
    if not sees_job_in_full(viewer, job):
        raise PermissionDeniedError(refusal)
    return job


def owned_job(session: Session, job_id: str, viewer: Account) -> Job:
    """The job, if the viewer is its buyer (403 if it may only look at it)."""
    job = visible_job(session, job_id, viewer)
    if job.buyer_id != viewer.id:
        raise PermissionDeniedError("only the job's buyer may do this")
    return job


def participant_job(session: Session, job_id: str, viewer: Account) -> Job:
    """The job, if the viewer is its buyer or an accepted provider."""
    job, offer = _visible(session, job_id, viewer)
    if job.buyer_id == viewer.id:
        return job
    if offer is not None and offer.state == OfferState.ACCEPTED:
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


def is_operator(viewer: Account | None) -> bool:
    """Admins: every provider's earnings, the payout batches, the ledger's totals."""
    return viewer is not None and viewer.role == "admin"


def sees_provider_money(viewer: Account | None, provider_id: str) -> bool:
    """A provider's earnings and payouts: the provider itself and admins."""
    return viewer is not None and (is_operator(viewer) or viewer.id == provider_id)


def sees_ledger_totals(viewer: Account | None) -> bool:
    """The platform's totals and negative accounts of the ledger report: admins only."""
    return is_operator(viewer)


@dataclass(frozen=True)
class JournalScope:
    """How much of the journal a viewer reads: "all" (admins), "jobs" (a buyer: its jobs'
    entries in full) or "own" (a provider: entries touching its accounts, only those legs)."""

    name: str
    buyer_id: str | None = None
    accounts: list[str] | None = None


def journal_scope(viewer: Account) -> JournalScope:
    if viewer.role == "admin":
        return JournalScope("all")
    if viewer.role == "buyer":
        return JournalScope("jobs", buyer_id=viewer.id)
    return JournalScope("own", accounts=[provider_payable(viewer.id), provider_paid(viewer.id)])


def payee_ids(leaf: LogLeaf) -> set[str]:
    """The providers a settlement record pays."""
    body = json.loads(leaf.payload).get("body", {})
    return {str(p["provider_id"]) for p in body.get("payees", [])}


def concerns_money_record(session: Session, account: Account, leaf: LogLeaf) -> bool:
    """Whether a log record is `account`'s business: any record but a money one, and a money
    record only for admins, its payee and (a settlement) the job's buyer."""
    if account.role == "admin" or leaf.kind not in MONEY_KINDS:
        return True
    if leaf.kind == "payout":
        return leaf.account_id == account.id
    job = session.get(Job, leaf.job_id) if leaf.job_id else None
    return (job is not None and job.buyer_id == account.id) or account.id in payee_ids(leaf)


def may_read_leaf(session: Session, account: Account, row: LogLeaf) -> bool:
    """Leaf payloads are shown to admins and to the parties they concern (hashes to all)."""
    if row.kind in MONEY_KINDS:
        return concerns_money_record(session, account, row)
    if account.role == "admin" or row.account_id == account.id or account.id in row.payload:
        return True
    if row.job_id is None:
        return False
    job = session.get(Job, row.job_id)
    if job is None:
        return False
    return job.buyer_id == account.id or is_participant(session, job.id, account.id)
