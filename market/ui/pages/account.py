"""The signed-in account's page: what it owns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from market.ledger import queries
from market.models import (
    Account,
    AccountPublic,
    Job,
    ListingPublic,
    OfferPublic,
    PayoutBatch,
    PayoutBatchPublic,
    ProviderEarnings,
    Receipt,
)
from market.services import access, accounts, listings, offers, payouts, receipts, reputation
from market.services import jobs as job_service
from market.ui.pages.common import JobRow, Named, job_row, require


@dataclass
class AccountPage:
    account: AccountPublic
    jobs: list[JobRow] = field(default_factory=list)
    receipts: dict[str, Receipt] = field(default_factory=dict)
    listings: list[ListingPublic] = field(default_factory=list)
    offers: list[OfferPublic] = field(default_factory=list)
    earnings: list[ProviderEarnings] = field(default_factory=list)
    batches: list[PayoutBatchPublic] = field(default_factory=list)
    providers: list[Named] = field(default_factory=list)


def account_page(session: Session, viewer: Account | None) -> AccountPage:
    """The signed-in account and what it owns: jobs and receipts, listings and offers, or
    (admins) the payout batches."""
    account = require(viewer)
    page = AccountPage(account=accounts.public(account))
    if account.role in ("buyer", "admin"):
        visible: Sequence[Job] = job_service.list_jobs(session, account)
        page.jobs = [job_row(session, j) for j in reversed(visible)]
        if account.role == "buyer":
            page.receipts = {j.id: receipts.receipt(session, j) for j in visible}
    if account.role == "provider":
        page.listings = [listings.public(li) for li in listings.list_listings(session, account)]
        page.offers = list(reversed(offers.list_offers(session, account)))
        page.earnings = queries.provider_earnings(session, account.id)
    if access.is_operator(account):
        batches = session.exec(
            select(PayoutBatch).order_by(col(PayoutBatch.created_at).desc())
        ).all()
        page.batches = [payouts.batch_public(session, b) for b in batches]
        page.providers = [Named(p.id, p.name) for p in reputation.providers(session)]
    return page
