"""Per-account quotas: active listings per provider, draft jobs per buyer.

A quota is checked and the new row written in one transaction that holds the account's lock
(its row `FOR UPDATE` on PostgreSQL, the database's write lock on SQLite), so requests racing
in several server processes cannot all pass at `limit - 1`. Refusals are 409 naming the
setting (`QuotaExceededError.quota`) and write nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, func, select

from market.errors import QuotaExceededError
from market.lifecycle import JobState, ListingState
from market.models import Account, Job, Listing


def lock_account(session: Session, account_id: str) -> None:
    """Serialize quota decisions on one account until the session's transaction ends.

    Call it first in a fresh transaction: on SQLite a read snapshot taken earlier could not
    be upgraded to the write lock once someone else wrote.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.exec(select(Account.id).where(Account.id == account_id).with_for_update()).first()
    else:
        # A write statement that touches no row still takes SQLite's write lock.
        session.execute(text("UPDATE account SET id = id WHERE 1 = 0"))


def _enforce(session: Session, count_stmt: Any, *, quota: str, limit: int, what: str) -> None:
    held = int(session.exec(count_stmt).one())
    if held >= limit:
        session.rollback()  # releases the lock; nothing was written
        raise QuotaExceededError(
            f"this account already has {held} {what}, its quota "
            f"(POLLEN_{quota.upper()}={limit}); withdraw or finish one first",
            quota=quota,
            limit=limit,
        )


def reserve_listing(session: Session, provider_id: str, *, limit: int) -> None:
    """Lock the provider and refuse if it already has `limit` active listings."""
    lock_account(session, provider_id)
    stmt = (
        select(func.count())
        .select_from(Listing)
        .where(col(Listing.provider_id) == provider_id, col(Listing.state) == ListingState.ACTIVE)
    )
    _enforce(session, stmt, quota="max_listings_per_provider", limit=limit, what="active listings")


def reserve_draft_job(session: Session, buyer_id: str, *, limit: int) -> None:
    """Lock the buyer and refuse if it already has `limit` jobs in `draft`."""
    lock_account(session, buyer_id)
    stmt = (
        select(func.count())
        .select_from(Job)
        .where(col(Job.buyer_id) == buyer_id, col(Job.state) == JobState.DRAFT)
    )
    _enforce(session, stmt, quota="max_draft_jobs_per_buyer", limit=limit, what="draft jobs")
