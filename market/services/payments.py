"""Funding and refunds on the payment rail, recorded in the ledger.

- `start_funding`: the buyer's `POST /v1/jobs/{id}/fund`. draft → funding, fixes the job's
  fee, and on the `stripe` rail creates (once, key `job:<id>:fund`) a PaymentIntent for the
  budget whose client secret the buyer confirms. Calling it again while funding polls the
  intent (the fallback when no webhook arrives).
- `apply_webhook`: a verified Stripe event. `payment_intent.succeeded` records the funding
  (ledger key `stripe:<pi id>:succeeded`, so replays change nothing) and opens the job.
- `process_refunds`: sends queued refunds (see `settlement.close_out`) through the rail.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, select

from market.db import unit_of_work
from market.errors import InvalidStateError, PaymentError
from market.ledger.journal import find
from market.lifecycle import JOB_FUNDABLE, JobState, PaymentStatus
from market.models import Job, Payment, PaymentPublic
from market.models.types import new_id
from market.payments import PaymentRail, WebhookEvent
from market.services import funding, jobs, settlement, verification
from market.services.matching import run_matching

log = logging.getLogger(__name__)


def public(p: Payment, *, with_secret: bool = False) -> PaymentPublic:
    return PaymentPublic(
        id=p.id,
        rail=p.rail,
        kind=p.kind,
        amount_cents=p.amount_cents,
        currency=p.currency,
        status=p.status,
        external_id=p.external_id,
        client_secret=p.client_secret if with_secret else None,
    )


def funding_payment(session: Session, job_id: str) -> Payment | None:
    return session.exec(
        select(Payment).where(Payment.job_id == job_id, Payment.kind == "funding")
    ).first()


def start_funding(
    session: Session, rail: PaymentRail, job: Job, *, fee_bps: int, now: datetime
) -> Payment | None:
    """Ask for the job's budget; returns the rail's payment (None on the manual rail)."""
    if job.state == JobState.FUNDING and rail.name == "stripe":
        if funding_payment(session, job.id) is not None:
            return poll_funding(session, rail, job, now=now)
        # Stripe failed when funding was first asked for: ask it again (the same idempotency
        # key returns the PaymentIntent it may have made before the connection broke).
    else:
        # Committed before Stripe is asked: no transaction stays open across a call to it.
        with unit_of_work(session):
            job.fee_bps = fee_bps
            jobs.request_funding(session, job, now=now)
    if rail.name != "stripe":
        return None
    key = f"job:{job.id}:fund"
    intent = rail.create_funding(
        job_id=job.id, amount_cents=job.budget_cents, currency=job.currency, key=key
    )
    payment = Payment(
        id=new_id("pay"),
        job_id=job.id,
        rail=rail.name,
        kind="funding",
        amount_cents=job.budget_cents,
        currency=job.currency,
        status=intent.status,
        external_id=intent.external_id,
        client_secret=intent.client_secret,
        key=key,
        created_at=now,
        updated_at=now,
    )
    with unit_of_work(session):
        session.add(payment)
    log.info("job %s: PaymentIntent %s for %d", job.id, intent.external_id, job.budget_cents)
    return payment


def poll_funding(session: Session, rail: PaymentRail, job: Job, *, now: datetime) -> Payment:
    """Ask the rail how the job's PaymentIntent is doing, and record a success."""
    payment = funding_payment(session, job.id)
    if payment is None or payment.external_id is None:
        raise InvalidStateError(f"job {job.id} has no payment to check")
    if payment.status != PaymentStatus.SUCCEEDED:
        intent = rail.funding_status(payment.external_id)
        if intent.status == PaymentStatus.SUCCEEDED:
            record_success(session, payment, intent.amount_cents, now=now)
        elif intent.status != payment.status:
            with unit_of_work(session):
                payment.status = intent.status
                payment.updated_at = now
                session.add(payment)
    return payment


def record_success(session: Session, payment: Payment, amount: int, *, now: datetime) -> bool:
    """The PaymentIntent succeeded: escrow the money, open the job; idempotent (an entry
    point: commits, then runs matching if the job opened)."""
    with unit_of_work(session):
        job = session.get(Job, payment.job_id)
        assert job is not None
        key = f"stripe:{payment.external_id}:succeeded"
        if find(session, key) is not None:
            return False
        settlement.record_funding(session, job, amount, key=key, source="stripe", now=now)
        payment.status = PaymentStatus.SUCCEEDED
        payment.updated_at = now
        session.add(payment)
        opened = False
        if job.state in JOB_FUNDABLE:
            opened = funding.open_if_funded(session, job, amount, now=now)
        else:
            # The job ended before its money arrived: straight back to the buyer.
            job.funded_cents += amount
            session.add(job)
            settlement.close_out(session, job, rail="stripe", now=now)
    log.info("job %s funded by %s (%d)", job.id, payment.external_id, amount)
    if opened:
        run_matching(session, now=now)
    return True


def apply_webhook(session: Session, event: WebhookEvent, *, now: datetime) -> str:
    """Act on a verified event; returns what was done (for the response and the logs)."""
    if event.type == "account.updated":
        return verification.on_account_updated(session, event.object, now=now)
    if event.type not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return "ignored"
    pi_id = str(event.object.get("id"))
    payment = session.exec(select(Payment).where(Payment.external_id == pi_id)).first()
    if payment is None:
        return "unknown-payment"
    if event.type == "payment_intent.payment_failed":
        if payment.status != PaymentStatus.SUCCEEDED:
            with unit_of_work(session):
                payment.status = PaymentStatus.FAILED
                payment.updated_at = now
                session.add(payment)
        return PaymentStatus.FAILED
    recorded = record_success(session, payment, int(event.object["amount"]), now=now)
    return "funded" if recorded else "duplicate"


def process_refunds(session: Session, rail: PaymentRail, *, now: datetime) -> int:
    """Send pending refunds through the rail; returns how many went out."""
    pending = session.exec(
        select(Payment).where(Payment.kind == "refund", Payment.status == PaymentStatus.PENDING)
    ).all()
    sent = 0
    for refund in pending:
        if rail.name != "stripe":
            continue
        funded = funding_payment(session, refund.job_id)
        try:
            external_id, status = rail.refund(
                funding_id=funded.external_id if funded else None,
                amount_cents=refund.amount_cents,
                currency=refund.currency,
                key=refund.key,
            )
        except PaymentError:
            log.warning("refund %s not sent yet; retried on the next pass", refund.id)
            continue
        refund.external_id = external_id
        refund.status = status
        refund.updated_at = now
        session.add(refund)
        session.commit()  # a refund Stripe sent is recorded before the next one is asked for
        sent += 1
    return sent


def payments_of(session: Session, job_id: str) -> list[Payment]:
    return list(session.exec(select(Payment).where(Payment.job_id == job_id)).all())
