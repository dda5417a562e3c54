"""What each page of the web dashboard shows, gathered for one viewer.

Every function takes a session, the viewer (`None` for an anonymous visitor) and plain
values, and reuses the services the JSON API uses, so the pages obey the same visibility rules:

- public: providers ranked by reputation, one provider's reputation history with reasons, and
  the ledger's hash-chain verification (without the platform's totals);
- a buyer sees its own jobs in full (included providers, funded / spent / escrow);
- a provider sees the jobs it has an offer for, only itself among their providers, and only
  its own money: its payouts page refuses anybody else but an admin (403);
- an admin sees everything;
- a job's final model is downloaded from its page by its buyer and admins only.

Nothing here renders HTML: pages get dataclasses and chart series (`market.ui.charts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from market import ledger
from market.blobs import BlobStore, BlobStream
from market.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from market.ledger import queries
from market.models import (
    TERMINAL_JOB_STATES,
    Account,
    AccountPublic,
    Job,
    JobPublic,
    LedgerReport,
    ListingPublic,
    OfferPublic,
    PayoutBatch,
    PayoutBatchPublic,
    ProviderEarnings,
    Receipt,
    ReputationEvent,
    ReputationPublic,
    Round,
)
from market.models.ledger import PostingPublic, TransactionPublic
from market.services import (
    access,
    accounts,
    groups,
    listings,
    offers,
    payouts,
    privacy,
    receipts,
    reputation,
    results,
    verification,
    views,
)
from market.services import jobs as job_service
from market.services.rounds import participants
from market.ui.charts import Point, Series
from market.ui.format import money

# Pages list at most this many journal entries and reputation points (the newest).
JOURNAL_LIMIT = 100
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class Named:
    """An account id with its display name, for links."""

    id: str
    name: str


@dataclass(frozen=True)
class ProviderRank:
    rank: int
    provider: Named
    score: float
    events: int
    latest_reason: str | None
    latest_at: datetime | None


@dataclass(frozen=True)
class JobRow:
    id: str
    title: str
    state: str
    arch: str
    rounds_done: int
    rounds_total: int
    providers: int
    max_providers: int
    budget_cents: int
    currency: str


@dataclass(frozen=True)
class MarketplacePage:
    open_jobs: list[JobRow]
    finished_jobs: list[JobRow]
    providers: list[ProviderRank]


@dataclass(frozen=True)
class RoundLine:
    number: int
    state: str
    attempt: int
    opened_at: datetime
    closed_at: datetime | None
    deadline: datetime
    submitted: int
    expected: int
    included: list[Named]
    close_reason: str | None
    accuracy: float | None
    loss: float | None
    # A regression job's measures, in the target's units (R² unitless).
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None


@dataclass(frozen=True)
class JobPage:
    job: JobPublic
    buyer: Named
    sees_all: bool
    providers: list[Named]
    rounds: list[RoundLine]
    accuracy: Series
    loss: Series
    # The buyer's and admins' view of the money; None for a provider.
    receipt: Receipt | None
    names: dict[str, str]
    # A provider's own earnings on this job (earned, paid, owed), else None.
    own_earnings: dict[str, Any] | None
    # ε each provider reports having spent (all of them for the buyer/admin, else its own).
    privacy: list[PrivacyLine] = field(default_factory=list)
    # Each provider's contribution score (market.services.groups) beside what it earned:
    # every provider for the buyer and admins, a provider its own line.
    contributions: list[ContributionLine] = field(default_factory=list)
    # "classification" (accuracy charted) or "regression" (RMSE and MAE, R² charted).
    task: str = "classification"
    errors: list[Series] = field(default_factory=list)
    r2: Series = field(default_factory=lambda: Series("R²", []))
    # Where the buyer (or an admin) downloads the final model; None for anyone else.
    final_model_url: str | None = None


@dataclass(frozen=True)
class ContributionLine:
    provider: Named
    score: float
    earned_cents: int


@dataclass(frozen=True)
class PrivacyLine:
    provider: Named
    epsilon: float
    delta: float
    round: int


@dataclass(frozen=True)
class ProviderPage:
    reputation: ReputationPublic
    series: Series
    may_see_money: bool
    # Whether the provider counts as a real party (matched, inside quorums), and by whom.
    verified: str


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


def require(viewer: Account | None) -> Account:
    """The viewer, or AuthenticationError for a page that needs a session."""
    if viewer is None:
        raise AuthenticationError("sign in to see this page")
    return viewer


def names_of(session: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.exec(select(Account).where(col(Account.id).in_(wanted))).all()
    return {a.id: a.name for a in rows}


def _named(ids: Iterable[str], names: dict[str, str]) -> list[Named]:
    return [Named(i, names.get(i, i)) for i in ids]


def _job_row(session: Session, job: Job) -> JobRow:
    accepted = len(participants(session, job.id))
    done = sum(
        1
        for r in session.exec(select(Round).where(Round.job_id == job.id)).all()
        if r.state in ("closed", "published")
    )
    return JobRow(
        id=job.id, title=job.title, state=job.state, arch=str(job.spec["model"]["arch"]),
        rounds_done=done, rounds_total=job.rounds_total, providers=accepted,
        max_providers=job.max_providers, budget_cents=job.budget_cents, currency=job.currency,
    )  # fmt: skip


def provider_ranking(
    session: Session, viewer: Account | None, *, now: datetime
) -> list[ProviderRank]:
    """Every provider by reputation, best first (what `GET /v1/reputation` shows)."""
    reps = [
        reputation.public(session, p, now=now, viewer=viewer, limit=1)
        for p in reputation.providers(session)
    ]
    reps.sort(key=lambda r: (-r.score, r.name, r.provider_id))
    return [
        ProviderRank(
            rank=i,
            provider=Named(r.provider_id, r.name),
            score=r.score,
            events=r.events,
            latest_reason=r.history[0].reason if r.history else None,
            latest_at=r.history[0].at if r.history else None,
        )
        for i, r in enumerate(reps, start=1)
    ]


def marketplace(session: Session, viewer: Account | None, *, now: datetime) -> MarketplacePage:
    """Providers ranked by reputation for everyone; jobs only as far as the viewer sees them
    (the API lists jobs to their buyer, their providers and admins, never anonymously)."""
    rows = (
        [_job_row(session, j) for j in job_service.list_jobs(session, viewer)]
        if viewer is not None
        else []
    )
    rows.reverse()  # newest first
    return MarketplacePage(
        open_jobs=[r for r in rows if r.state not in TERMINAL_JOB_STATES],
        finished_jobs=[r for r in rows if r.state in TERMINAL_JOB_STATES],
        providers=provider_ranking(session, viewer, now=now),
    )


def _metric(metrics: dict[str, float] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return None if value is None else float(value)


def job_page(session: Session, job_id: str, viewer: Account | None) -> JobPage:
    """A job's status, rounds and metrics; money in full for its buyer and admins only."""
    account = require(viewer)
    job = access.visible_job(session, job_id, account)
    view = views.job_public(session, job, account)
    sees_all = account.role == "admin" or account.id == job.buyer_id
    rows = {r.number: r for r in session.exec(select(Round).where(Round.job_id == job.id)).all()}
    ids = {job.buyer_id, *view.accepted_providers}
    for summary in view.rounds:
        ids.update(summary.included)
    rec = receipts.receipt(session, job) if sees_all else None
    if rec is not None:
        ids.update(p["provider_id"] for p in rec.providers)
    names = names_of(session, ids)
    lines = []
    for s in view.rounds:
        row = rows[s.round]
        lines.append(
            RoundLine(
                number=s.round, state=s.state, attempt=s.attempt, opened_at=row.opened_at,
                closed_at=row.closed_at, deadline=s.deadline, submitted=s.submitted,
                expected=len(row.expected), included=_named(s.included, names),
                close_reason=row.close_reason, accuracy=_metric(s.metrics, "accuracy"),
                loss=_metric(s.metrics, "loss"), rmse=_metric(s.metrics, "rmse"),
                mae=_metric(s.metrics, "mae"), r2=_metric(s.metrics, "r2"),
            )
        )  # fmt: skip
    task = str(job.spec.get("task", "classification"))
    accuracy = _series(lines, "accuracy", "accuracy", "{:.4f}")
    loss = _series(lines, "loss", "loss", "{:.4f}")
    errors = [_series(lines, "rmse", "RMSE", "{:.4g}"), _series(lines, "mae", "MAE", "{:.4g}")]
    r2 = _series(lines, "r2", "R²", "{:.4f}")
    spent = privacy.reports_for(session, job.id, account)
    names.update(names_of(session, {r.provider_id for r in spent} - set(names)))
    privacy_lines = [
        PrivacyLine(Named(r.provider_id, names.get(r.provider_id, r.provider_id)), r.epsilon,
                    r.delta, r.round)
        for r in spent
    ]  # fmt: skip
    own = None
    if account.role == "provider":
        for e in queries.provider_earnings(session, account.id):
            for j in e.jobs:
                if j["job_id"] == job.id:
                    own = {**j, "currency": e.currency}
    earned = {str(p["provider_id"]): int(p["earned_cents"]) for p in (rec.providers if rec else [])}
    if own is not None:
        earned[account.id] = int(own["earned_cents"])
    scores = groups.scores(session, job)
    contributions = [
        ContributionLine(Named(pid, names.get(pid, pid)), score, earned.get(pid, 0))
        for pid, score in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if sees_all or pid == account.id
    ]
    download = None
    if sees_all and job.final_model_key is not None:
        download = f"/ui/jobs/{job.id}/model"
    return JobPage(
        job=view, buyer=Named(job.buyer_id, names.get(job.buyer_id, job.buyer_id)),
        sees_all=sees_all, providers=_named(view.accepted_providers, names), rounds=lines,
        accuracy=accuracy, loss=loss, receipt=rec, names=names, own_earnings=own,
        privacy=privacy_lines, contributions=contributions, task=task, errors=errors, r2=r2,
        final_model_url=download,
    )  # fmt: skip


def _series(lines: Sequence[RoundLine], attr: str, name: str, fmt: str) -> Series:
    """One measure per round that has it, each point labelled 'Round 3: RMSE 54.2'."""
    points = []
    for line in lines:
        value = getattr(line, attr)
        if value is not None:
            label = f"Round {line.number}: {name} {fmt.format(value)}"
            points.append(Point(line.number, value, label))
    return Series(name, points)


def final_model(
    session: Session, blobs: BlobStore, job_id: str, viewer: Account | None
) -> BlobStream:
    """The job's final model file, for its buyer and admins (providers held every round's
    model already, but the page offers the result to the party who paid for it)."""
    account = require(viewer)
    job = access.visible_job(session, job_id, account)
    if account.role != "admin" and account.id != job.buyer_id:
        raise PermissionDeniedError("the final model is downloaded by the job's buyer")
    return results.open_final_model(blobs, job)


def _provider(session: Session, provider_id: str) -> Account:
    account = session.get(Account, provider_id)
    if account is None or account.role != "provider":
        raise NotFoundError(f"no provider {provider_id}")
    return account


def _may_see_money(viewer: Account | None, provider_id: str) -> bool:
    return viewer is not None and (viewer.role == "admin" or viewer.id == provider_id)


def reputation_series(session: Session, provider_id: str) -> Series:
    """The score just after each recorded event (the newest `HISTORY_LIMIT` of them)."""
    events = list(
        session.exec(
            select(ReputationEvent)
            .where(ReputationEvent.provider_id == provider_id)
            .order_by(col(ReputationEvent.at), col(ReputationEvent.id))
        ).all()
    )
    first = max(0, len(events) - HISTORY_LIMIT)
    points = []
    for i in range(first, len(events)):
        e = events[i]
        # The score as it stood at the event's own time: older events decayed, none newer.
        alpha, beta = reputation.alpha_beta(events[: i + 1], e.at)
        value = alpha / (alpha + beta)
        points.append(
            Point(i + 1, value, f"Event {i + 1}, {e.kind} ({e.weight:+g}): score {value:.3f}")
        )
    return Series("reputation", points)


def provider_page(
    session: Session, provider_id: str, viewer: Account | None, *, now: datetime
) -> ProviderPage:
    """A provider's public reputation: score, history with reasons, score over time."""
    account = _provider(session, provider_id)
    return ProviderPage(
        reputation=reputation.public(
            session, account, now=now, viewer=viewer, limit=HISTORY_LIMIT
        ),
        series=reputation_series(session, provider_id),
        may_see_money=_may_see_money(viewer, provider_id),
        verified=verification.describe(account),
    )


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
    provider = _provider(session, provider_id)
    if not _may_see_money(account, provider_id):
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


def _journal_scope(viewer: Account) -> tuple[str, list[str] | None]:
    """The journal scope of a viewer and, unless it sees everything, its accounts."""
    if viewer.role == "admin":
        return "all", None
    if viewer.role == "buyer":
        return "jobs", None
    return "own", [ledger.provider_payable(viewer.id), ledger.provider_paid(viewer.id)]


def _journal(session: Session, viewer: Account) -> tuple[str, list[JournalEntry], int]:
    scope, own_accounts = _journal_scope(viewer)
    found = queries.journal(
        session,
        limit=JOURNAL_LIMIT,
        buyer_id=viewer.id if scope == "jobs" else None,
        accounts=own_accounts,
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
    return scope, entries, found.total


def ledger_page(session: Session, viewer: Account | None) -> LedgerPage:
    """The chain's verification for everyone; journal entries as far as the viewer's money
    goes (admins all, a buyer its jobs', a provider its own legs); totals for admins."""
    report = ledger.verify(session)
    if viewer is None or viewer.role != "admin":
        report.totals = {}
        report.negative_accounts = []
    if viewer is None:
        return LedgerPage(report=report, scope="public", entries=[], total_entries=0)
    scope, entries, total = _journal(session, viewer)
    return LedgerPage(report=report, scope=scope, entries=entries, total_entries=total)


def account_page(session: Session, viewer: Account | None) -> AccountPage:
    """The signed-in account and what it owns: jobs and receipts, listings and offers, or
    (admins) the payout batches."""
    account = require(viewer)
    page = AccountPage(account=accounts.public(account))
    if account.role in ("buyer", "admin"):
        visible: Sequence[Job] = job_service.list_jobs(session, account)
        page.jobs = [_job_row(session, j) for j in reversed(visible)]
        if account.role == "buyer":
            page.receipts = {j.id: receipts.receipt(session, j) for j in visible}
    if account.role == "provider":
        page.listings = [listings.public(li) for li in listings.list_listings(session, account)]
        page.offers = list(reversed(offers.list_offers(session, account)))
        page.earnings = queries.provider_earnings(session, account.id)
    if account.role == "admin":
        batches = session.exec(
            select(PayoutBatch).order_by(col(PayoutBatch.created_at).desc())
        ).all()
        page.batches = [payouts.batch_public(session, b) for b in batches]
        page.providers = [Named(p.id, p.name) for p in reputation.providers(session)]
    return page
