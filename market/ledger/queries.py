"""Read models over the journal: what the postings say, joined once, here.

Every figure a page, a receipt or a payout run shows about money is read back from the
postings by one of these functions; nothing outside `market.ledger` joins postings to
transactions. They only read (no flush, no commit), and they decide nothing about who may
see what: callers pass the scope `market.services.access` chose.

- `payable_by_job`: what each provider is still owed per job and currency, net of payouts
  already pending (what a payout run pays);
- `provider_earnings`: one provider's earned, paid and owed money per currency and job;
- `provider_moves`: each journal entry that moved a provider's money, in chain order;
- `journal`: the newest entries of the journal, optionally limited to a buyer's jobs or to
  the entries touching some accounts;
- `job_settlements`: a job's settled rounds (shares and fees) and what was paid out of them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from market.ledger.journal import transactions
from market.ledger.names import kind_of, owner_of, provider_paid, provider_payable
from market.lifecycle import PayoutStatus
from market.models import (
    Job,
    LedgerPosting,
    LedgerTransaction,
    Payout,
    PayoutPublic,
    ProviderEarnings,
)


def payable_by_job(
    session: Session, provider_id: str | None = None
) -> dict[tuple[str, str, str], int]:
    """(provider, job, currency) → payable balance still owed, net of pending payouts."""
    stmt = (
        select(
            LedgerPosting.account,
            LedgerTransaction.job_id,
            LedgerTransaction.currency,
            LedgerPosting.amount,
        )
        .join(LedgerTransaction, col(LedgerTransaction.id) == col(LedgerPosting.txn_id))
        .where(col(LedgerPosting.account).endswith(":payable"))
    )
    if provider_id is not None:
        stmt = stmt.where(LedgerPosting.account == provider_payable(provider_id))
    owed: dict[tuple[str, str, str], int] = defaultdict(int)
    for account, job_id, currency, amount in session.exec(stmt).all():
        pid = owner_of(account)
        assert pid is not None and job_id is not None
        owed[(pid, job_id, currency)] += amount
    for p in session.exec(select(Payout).where(Payout.status == PayoutStatus.PENDING)).all():
        owed[(p.provider_id, p.job_id, p.currency)] -= p.amount_cents
    return {k: v for k, v in owed.items() if v > 0}


def provider_earnings(session: Session, provider_id: str) -> list[ProviderEarnings]:
    """One provider's earned, paid and owed money per currency, with a per-job breakdown."""
    rows = session.execute(
        sa_select(col(LedgerPosting.account), col(LedgerTransaction.job_id),
                  col(LedgerTransaction.currency), col(LedgerTransaction.kind),
                  col(LedgerPosting.amount))
        .join(LedgerTransaction, col(LedgerTransaction.id) == col(LedgerPosting.txn_id))
        .where(col(LedgerPosting.account).in_(
            [provider_payable(provider_id), provider_paid(provider_id)]))
    ).all()  # fmt: skip
    jobs: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for account, job_id, currency, kind, amount in rows:
        entry = jobs[currency].setdefault(
            str(job_id), {"earned_cents": 0, "paid_cents": 0, "rounds": 0}
        )
        if kind == "settle":
            entry["earned_cents"] += amount
            entry["rounds"] += 1
        elif account.endswith(":paid"):
            entry["paid_cents"] += amount
    payouts = session.exec(
        select(Payout).where(Payout.provider_id == provider_id).order_by(col(Payout.created_at))
    ).all()
    out = []
    for currency, per_job in sorted(jobs.items()):
        earned = sum(j["earned_cents"] for j in per_job.values())
        paid = sum(j["paid_cents"] for j in per_job.values())
        out.append(
            ProviderEarnings(
                provider_id=provider_id, currency=currency, earned_cents=earned,
                paid_cents=paid, balance_cents=earned - paid,
                jobs=[{"job_id": j, **v, "owed_cents": v["earned_cents"] - v["paid_cents"]}
                      for j, v in sorted(per_job.items())],
                payouts=[PayoutPublic.model_validate(p, from_attributes=True)
                         for p in payouts if p.currency == currency],
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class MoneyMove:
    """A journal entry that moved a provider's money: earned (a settled round) or paid out."""

    txn: LedgerTransaction
    earned: int
    paid: int


def provider_moves(session: Session, provider_id: str) -> dict[str, list[MoneyMove]]:
    """Per currency, in chain order, each entry that moved the provider's payable or paid
    account (a settled round or a payout)."""
    rows = session.exec(
        select(LedgerPosting, LedgerTransaction)
        .join(LedgerTransaction, col(LedgerTransaction.id) == col(LedgerPosting.txn_id))
        .where(col(LedgerPosting.account).in_(
            [provider_payable(provider_id), provider_paid(provider_id)]))
        .order_by(col(LedgerTransaction.seq), col(LedgerPosting.position))
    ).all()  # fmt: skip
    moves: dict[str, list[MoneyMove]] = defaultdict(list)
    for posting, txn in rows:
        earned = posting.amount if txn.kind == "settle" else 0
        paid = posting.amount if posting.account.endswith(":paid") else 0
        if earned or paid:
            moves[txn.currency].append(MoneyMove(txn, earned, paid))
    return dict(sorted(moves.items()))


@dataclass(frozen=True)
class JournalPage:
    """The newest journal entries in a scope, each with all its legs, and how many the
    scope holds in all."""

    entries: list[tuple[LedgerTransaction, list[LedgerPosting]]]
    total: int


def journal(
    session: Session,
    *,
    limit: int,
    buyer_id: str | None = None,
    accounts: list[str] | None = None,
) -> JournalPage:
    """The newest `limit` entries, newest first: every entry, or those of `buyer_id`'s jobs,
    or those touching one of `accounts`."""
    stmt = select(LedgerTransaction)
    if buyer_id is not None:
        mine = select(Job.id).where(Job.buyer_id == buyer_id)
        stmt = stmt.where(col(LedgerTransaction.job_id).in_(mine))
    if accounts is not None:
        touching = select(LedgerPosting.txn_id).where(col(LedgerPosting.account).in_(accounts))
        stmt = stmt.where(col(LedgerTransaction.id).in_(touching))
    txns = list(session.exec(stmt.order_by(col(LedgerTransaction.seq).desc())).all())
    shown = txns[:limit]
    legs: dict[str, list[LedgerPosting]] = defaultdict(list)
    if shown:
        for p in session.exec(
            select(LedgerPosting)
            .where(col(LedgerPosting.txn_id).in_([t.id for t in shown]))
            .order_by(col(LedgerPosting.position))
        ).all():
            legs[p.txn_id].append(p)
    return JournalPage(entries=[(t, legs[t.id]) for t in shown], total=len(txns))


@dataclass
class JobSettlements:
    """A job's settled rounds as the journal holds them: per provider what it earned, in how
    many rounds, and what was transferred to it; per round the shares, fees and pool."""

    earned: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    transferred: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rounds_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rounds: list[dict[str, Any]] = field(default_factory=list)


def job_settlements(session: Session, job_id: str) -> JobSettlements:
    """What the job's `settle` and `payout` entries say, in chain order."""
    txns = transactions(session, job_id=job_id)
    legs: dict[str, list[LedgerPosting]] = defaultdict(list)
    if txns:
        for p in session.exec(
            select(LedgerPosting).where(col(LedgerPosting.txn_id).in_([t.id for t in txns]))
        ).all():
            legs[p.txn_id].append(p)
    out = JobSettlements()
    for txn in txns:
        if txn.kind == "settle":
            out.rounds.append(_round_line(txn, legs[txn.id], out))
        elif txn.kind == "payout":
            for p in legs[txn.id]:
                if kind_of(p.account) == "paid":
                    out.transferred[str(owner_of(p.account))] += p.amount
    return out


def _round_line(
    txn: LedgerTransaction, postings: list[LedgerPosting], out: JobSettlements
) -> dict[str, Any]:
    line: dict[str, Any] = {"round": txn.meta.get("round"), "fees_cents": 0, "shares": {}}
    for p in postings:
        kind = kind_of(p.account)
        if kind == "payable":
            pid = str(owner_of(p.account))
            out.earned[pid] += p.amount
            out.rounds_in[pid] += 1
            line["shares"][pid] = p.amount
        elif kind == "fees":
            line["fees_cents"] = p.amount
    line["pool_cents"] = sum(line["shares"].values())
    return line
