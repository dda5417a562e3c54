"""A provider's payouts page and the ledger page (chain verification and journal)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from market import ledger
from market.errors import PermissionDeniedError
from market.ledger import queries
from market.models import Account, Job, LedgerReport, ProviderEarnings
from market.models.ledger import PostingPublic, TransactionPublic
from market.services import access
from market.ui.charts import Point, Series
from market.ui.format import money
from market.ui.pages.common import Named, provider_account, require

# The ledger page lists at most this many journal entries (the newest).
JOURNAL_LIMIT = 100


@dataclass(frozen=True)
class PayoutsPage:
    provider: Named
    earnings: list[ProviderEarnings]
    # Per currency: cumulative earned and cumulative paid out, one point per ledger entry.
    charts: list[tuple[str, list[Series]]]
    job_titles: dict[str, str]


@dataclass(frozen=True)
class JournalEntry:
    txn: TransactionPublic
    # Legs on other parties' accounts that this viewer may not see.
    hidden_legs: int


@dataclass(frozen=True)
class LedgerPage:
    report: LedgerReport
    scope: str
    entries: list[JournalEntry]
    total_entries: int


def _earnings_series(session: Session, provider_id: str) -> list[tuple[str, list[Series]]]:
    """Per currency, cumulative earned and paid out after each ledger entry that moved the
    provider's money (a settled round or a payout): both lines have a point at every entry."""
    out = []
    for cur, entries in queries.provider_moves(session, provider_id).items():
        earned_pts, paid_pts = [], []
        earned_sum = paid_sum = 0
        for n, move in enumerate(entries, start=1):
            txn = move.txn
            earned_sum += move.earned
            paid_sum += move.paid
            what = f"round {txn.meta.get('round')}" if txn.kind == "settle" else "payout"
            when = f"{txn.created_at:%Y-%m-%d %H:%M} UTC, {what} of job {txn.job_id}"
            # Amounts stay integer cents; the chart formats its axis with `money`.
            earned_pts.append(Point(n, earned_sum, f"{when}: earned {money(earned_sum, cur)}"))
            paid_pts.append(Point(n, paid_sum, f"{when}: paid out {money(paid_sum, cur)}"))
        out.append((cur, [Series("earned", earned_pts), Series("paid out", paid_pts)]))
    return out


def payouts_page(session: Session, provider_id: str, viewer: Account | None) -> PayoutsPage:
    """A provider's earnings and payouts: the provider itself and admins, nobody else."""
    account = require(viewer)
    provider = provider_account(session, provider_id)
    if not access.sees_provider_money(account, provider_id):
        raise PermissionDeniedError("a provider's payouts are shown to that provider only")
    earnings = queries.provider_earnings(session, provider_id)
    job_ids = {j["job_id"] for e in earnings for j in e.jobs}
    titles = {
        j.id: j.title for j in session.exec(select(Job).where(col(Job.id).in_(job_ids))).all()
    }
    return PayoutsPage(
        provider=Named(provider.id, provider.name),
        earnings=earnings,
        charts=_earnings_series(session, provider_id),
        job_titles=titles,
    )


def _journal(session: Session, viewer: Account) -> tuple[str, list[JournalEntry], int]:
    scope = access.journal_scope(viewer)
    own_accounts = scope.accounts
    found = queries.journal(
        session, limit=JOURNAL_LIMIT, buyer_id=scope.buyer_id, accounts=own_accounts
    )
    entries = []
    for t, legs in found.entries:
        visible = [p for p in legs if own_accounts is None or p.account in own_accounts]
        entries.append(
            JournalEntry(
                txn=TransactionPublic(
                    id=t.id, seq=t.seq, key=t.key, kind=t.kind, job_id=t.job_id,
                    currency=t.currency, memo=t.memo if own_accounts is None else "",
                    created_at=t.created_at, hash=t.hash,
                    postings=[PostingPublic(account=p.account, amount_cents=p.amount)
                              for p in visible],
                ),
                hidden_legs=len(legs) - len(visible),
            )
        )  # fmt: skip
    return scope.name, entries, found.total


def ledger_page(session: Session, viewer: Account | None) -> LedgerPage:
    """The chain's verification for everyone; journal entries as far as the viewer's money
    goes (admins all, a buyer its jobs', a provider its own legs); totals for admins."""
    report = ledger.verify(session)
    if not access.sees_ledger_totals(viewer):
        report.totals = {}
        report.negative_accounts = []
    if viewer is None:
        return LedgerPage(report=report, scope="public", entries=[], total_entries=0)
    scope, entries, total = _journal(session, viewer)
    return LedgerPage(report=report, scope=scope, entries=entries, total_entries=total)
