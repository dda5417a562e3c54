"""The buyer's receipt for a job: funded, paid to each provider, fees, refunded, in escrow.

Every figure is read back from the ledger (the job's transactions, through
`market.ledger.queries`), so the receipt adds up by construction and `balanced`
double-checks funded = paid + fees + refunded + escrow.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from market import ledger
from market.ledger import queries
from market.models import Account, Job, Receipt
from market.services import payments, settlement


def receipt(session: Session, job: Job) -> Receipt:
    settled = queries.job_settlements(session, job.id)
    earned = settled.earned
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
                "transferred_cents": settled.transferred.get(pid, 0),
                "rounds": settled.rounds_in[pid],
            }
            for pid, amount in sorted(earned.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        rounds=settled.rounds,
        payments=[payments.public(p) for p in payments.payments_of(session, job.id)],
    )


def _names(session: Session, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.exec(select(Account).where(col(Account.id).in_(ids))).all()
    return {a.id: a.name for a in rows}
