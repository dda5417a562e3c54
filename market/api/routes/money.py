"""Money and reputation, for review: payouts, reputation, ledger verification, receipts,
the operator's payout runs, and Stripe's webhook.

Who sees what: a provider its own payouts, an admin everyone's; reputation and the ledger's
chain summary are public (the ledger's totals only to admins); a receipt to the job's buyer
and admins; the webhook authenticates by its signature alone.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import Session, col, select

from dataspec.money import PayoutRun, PayoutsView
from market import ledger
from market.api.deps import (
    AdminAccount,
    CurrentAccount,
    MaybeAccount,
    NowDep,
    ProviderOrAdmin,
    RailDep,
    SessionDep,
)
from market.errors import NotFoundError
from market.ledger import queries
from market.models import (
    Account,
    LedgerReport,
    PayoutBatch,
    PayoutBatchPublic,
    Receipt,
    ReputationPublic,
)
from market.models.types import could_be_id
from market.services import access, payments, payouts, receipts, reputation

router = APIRouter(tags=["money"])


class WebhookResult(BaseModel):
    received: bool
    action: str


@router.get("/v1/payouts", response_model=PayoutsView)
def list_payouts(account: ProviderOrAdmin, session: SessionDep) -> PayoutsView:
    """A provider's own earnings and payouts, per job; an admin sees every provider's."""
    if account.role == "provider":
        return PayoutsView(earnings=queries.provider_earnings(session, account.id), batches=[])
    everyone = [
        e for p in reputation.providers(session) for e in queries.provider_earnings(session, p.id)
    ]
    batches = session.exec(select(PayoutBatch).order_by(col(PayoutBatch.created_at))).all()
    return PayoutsView(
        earnings=everyone, batches=[payouts.batch_public(session, b) for b in batches]
    )


@router.post("/v1/admin/payouts/run", response_model=PayoutRun)
def run_payouts(
    account: AdminAccount, session: SessionDep, rail: RailDep, now: NowDep
) -> PayoutRun:
    """Pay every provider's payable balance: Connect transfers, or a CSV batch to mark paid."""
    batch = payouts.run(session, rail, now=now)
    return PayoutRun(batch=payouts.batch_public(session, batch) if batch else None)


@router.post("/v1/admin/payouts/{batch_id}/mark-paid", response_model=PayoutBatchPublic)
def mark_paid(
    batch_id: str, account: AdminAccount, session: SessionDep, now: NowDep
) -> PayoutBatchPublic:
    """The operator has paid a manual batch: the ledger moves payables to paid."""
    return payouts.batch_public(session, payouts.mark_paid(session, batch_id, now=now))


def _provider(session: Session, provider_id: str) -> Account:
    account = session.get(Account, provider_id) if could_be_id(provider_id) else None
    if account is None or account.role != "provider":
        raise NotFoundError(f"no provider {provider_id}")
    return account


@router.get("/v1/reputation", response_model=list[ReputationPublic])
def list_reputation(
    account: MaybeAccount, session: SessionDep, now: NowDep
) -> list[ReputationPublic]:
    """Every provider's score with its latest reasons (public; jobs named only to parties)."""
    return [
        reputation.public(session, p, now=now, viewer=account, limit=10)
        for p in reputation.providers(session)
    ]


@router.get("/v1/reputation/{provider_id}", response_model=ReputationPublic)
def get_reputation(
    provider_id: str, account: MaybeAccount, session: SessionDep, now: NowDep
) -> ReputationPublic:
    """One provider's score and full history with reasons (public; the jobs its events
    name are shown only to the provider, operators and each job's buyer)."""
    return reputation.public(session, _provider(session, provider_id), now=now, viewer=account)


@router.get("/v1/ledger/verify", response_model=LedgerReport)
def verify_ledger(account: MaybeAccount, session: SessionDep) -> LedgerReport:
    """Recompute the hash chain and the balances; totals are shown to admins only."""
    report = ledger.verify(session)
    if not access.sees_ledger_totals(account):
        report.totals = {}
        report.negative_accounts = []
    return report


@router.get("/v1/jobs/{job_id}/receipt", response_model=Receipt)
def job_receipt(job_id: str, account: CurrentAccount, session: SessionDep) -> Receipt:
    """Where the buyer's money went: funded, paid to each provider, fees, refunded."""
    refusal = "only the job's buyer and admins read its receipt"
    job = access.buyer_or_admin_job(session, job_id, account, refusal)
    return receipts.receipt(session, job)


@router.post("/v1/webhooks/stripe", response_model=WebhookResult)
async def stripe_webhook(
    request: Request, session: SessionDep, rail: RailDep, now: NowDep
) -> WebhookResult:
    """Stripe's events, verified by signature; a replayed event changes nothing."""
    payload = await request.body()
    event = rail.parse_webhook(payload, request.headers.get("stripe-signature"))
    action = await run_in_threadpool(payments.apply_webhook, session, event, now=now)
    return WebhookResult(received=True, action=action)
