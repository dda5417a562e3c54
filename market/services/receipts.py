"""The buyer's receipt for a job: funded, paid to each provider, fees, refunded, in escrow.

Every figure is read back from the ledger (the job's transactions), so the receipt adds up by
construction and `balanced` double-checks funded = paid + fees + refunded + escrow.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlmodel import Session, col, select

from market import ledger
from market.ledger.names import kind_of, owner_of
from market.models import Account, Job, LedgerPosting, LedgerTransaction, Receipt
from market.services import payments, settlement


def receipt(session: Session, job: Job) -> Receipt:
    txns = ledger.transactions(session, job_id=job.id)
    legs: dict[str, list[LedgerPosting]] = defaultdict(list)
    if txns:
        for p in session.exec(
            select(LedgerPosting).where(col(LedgerPosting.txn_id).in_([t.id for t in txns]))
        ).all():
            legs[p.txn_id].append(p)
    earned: dict[str, int] = defaultdict(int)
    transferred: dict[str, int] = defaultdict(int)
    rounds_in: dict[str, int] = defaultdict(int)
    per_round: list[dict[str, Any]] = []
    for txn in txns:
        if txn.kind == "settle":
            per_round.append(_round_line(txn, legs[txn.id], earned, rounds_in))
        elif txn.kind == "payout":
            for p in legs[txn.id]:
                if kind_of(p.account) == "paid":
                    transferred[str(owner_of(p.account))] += p.amount
    names = _names(session, list(earned))
    t = ledger.job_totals(session, job.id)
    return Receipt(
        job_id=job.id,
        state=job.state,
        currency=job.currency,
        rail=settlement.job_rail(session, job),
        budget_cents=job.budget_cents,
        funded_cents=t["funded"],
        paid_cents=t["paid"],
        fees_cents=t["fees"],
        refunded_cents=t["refunded"],
        escrow_cents=t["escrow"],
        balanced=t["funded"] == t["paid"] + t["fees"] + t["refunded"] + t["escrow"],
        fee_bps=job.fee_bps,
        providers=[
            {
                "provider_id": pid,
                "name": names.get(pid, pid),
                "earned_cents": amount,
                "transferred_cents": transferred.get(pid, 0),
                "rounds": rounds_in[pid],
            }
            for pid, amount in sorted(earned.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        rounds=per_round,
        payments=[payments.public(p) for p in payments.payments_of(session, job.id)],
    )


def _round_line(
    txn: LedgerTransaction,
    postings: list[LedgerPosting],
    earned: dict[str, int],
    rounds_in: dict[str, int],
) -> dict[str, Any]:
    line: dict[str, Any] = {"round": txn.meta.get("round"), "fees_cents": 0, "shares": {}}
    for p in postings:
        kind = kind_of(p.account)
        if kind == "payable":
            pid = str(owner_of(p.account))
            earned[pid] += p.amount
            rounds_in[pid] += 1
            line["shares"][pid] = p.amount
        elif kind == "fees":
            line["fees_cents"] = p.amount
    line["pool_cents"] = sum(line["shares"].values())
    return line


def _names(session: Session, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.exec(select(Account).where(col(Account.id).in_(ids))).all()
    return {a.id: a.name for a in rows}
