"""Payouts: what providers earned (their payable balances) leaves the platform.

`run` groups each provider's payable balance by job and currency (`ledger.queries.payable_by_job`:
the postings on `provider:<id>:payable` of the job's transactions), minus what a pending payout
already covers, into one batch:

- on a rail with transfers (Stripe Connect): one connected account per provider (created once,
  key `connect:<provider>`), one Transfer per provider and job (`transfer_group` = job id,
  key `payout:<payout id>`); each transfer that went through posts payable → paid
  (ledger key `payout:<payout id>`). A failed transfer stays pending for the next run;
- otherwise (manual rail): the batch is exported as CSV, and `mark_paid` posts the ledger
  transactions once the operator has sent the money.

Each payout posted also gets the server's signed `payout` record in the transparency log
(provider, cents, currency, the job it covers, the rail and its reference): what a
provider's `pollen audit` holds its payments to.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import text
from sqlmodel import Session, col, select

from market import ledger, translog
from market.db import AdvisoryLock, unit_of_work
from market.errors import InvalidStateError, NotFoundError, PaymentError
from market.ledger import queries
from market.lifecycle import BatchStatus, PayoutStatus
from market.models import (
    Account,
    ConnectedAccount,
    Payout,
    PayoutBatch,
    PayoutBatchPublic,
    PayoutPublic,
)
from market.models.types import could_be_id, new_id
from market.payments import PaymentRail
from market.services import trust

log = logging.getLogger(__name__)


def _post_paid(session: Session, payout: Payout, *, now: datetime) -> None:
    txn = ledger.post(
        session,
        key=f"payout:{payout.id}",
        kind="payout",
        currency=payout.currency,
        legs=[
            (ledger.provider_payable(payout.provider_id), -payout.amount_cents),
            (ledger.provider_paid(payout.provider_id), payout.amount_cents),
        ],
        job_id=payout.job_id,
        memo=f"payout {payout.id} ({payout.external_id or 'manual'})",
        now=now,
    )
    batch = session.get(PayoutBatch, payout.batch_id)
    rail = batch.rail if batch is not None else "manual"
    trust.log_payout(session, translog.current(), payout, txn, rail=rail, now=now)
    payout.status = PayoutStatus.PAID
    payout.paid_at = now
    session.add(payout)


def connected_account_id(session: Session, rail: PaymentRail, provider_id: str) -> str:
    """The provider's Connect account, created once (key `connect:<provider>`); commits."""
    known = session.get(ConnectedAccount, provider_id)
    if known is not None:
        return known.external_id
    account = session.get(Account, provider_id)
    name = account.name if account else provider_id
    external = rail.connected_account(
        provider_id=provider_id, name=name, key=f"connect:{provider_id}"
    )
    session.add(ConnectedAccount(provider_id=provider_id, external_id=external))
    session.commit()  # the account exists at Stripe now: recorded whatever happens next
    return external


def _csv(payouts: list[Payout]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["payout_id", "provider_id", "job_id", "amount_cents", "currency"])
    for p in payouts:
        writer.writerow([p.id, p.provider_id, p.job_id, p.amount_cents, p.currency])
    return out.getvalue()


def retry_pending(session: Session, rail: PaymentRail, *, now: datetime) -> int:
    """Transfers that failed earlier, again under their first idempotency keys."""
    if not rail.transfers:
        return 0
    partial = select(PayoutBatch).where(PayoutBatch.status == BatchStatus.PARTIAL)
    batches = session.exec(partial).all()
    for batch in batches:
        _transfer(session, rail, batch, batch_payouts(session, batch.id), now=now)
    return len(batches)


_run_lock = threading.Lock()


@contextmanager
def _one_run_at_a_time(session: Session) -> Iterator[None]:
    """Serialize payout runs: in this process by a lock, across processes on PostgreSQL by a
    session-level advisory lock on a connection of its own (a run commits several times, and
    each commit hands the session's connection back to the pool)."""
    with _run_lock:
        engine = session.get_bind().engine
        if engine.dialect.name != "postgresql":
            yield
            return
        key = {"k": int(AdvisoryLock.PAYOUT_RUN)}
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), key)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)


def run(session: Session, rail: PaymentRail, *, now: datetime) -> PayoutBatch | None:
    """Pay every provider what it is owed; None when nobody is owed anything new.

    Runs one at a time: a second run started meanwhile waits, then finds the first run's
    payouts pending or paid and owes nothing twice (the database also refuses a second
    pending payout for one provider, job and currency).
    """
    with _one_run_at_a_time(session):
        session.commit()  # read what the previous run committed, not an older snapshot
        session.expire_all()
        return _run(session, rail, now=now)


def _run(session: Session, rail: PaymentRail, *, now: datetime) -> PayoutBatch | None:
    retry_pending(session, rail, now=now)
    owed = queries.payable_by_job(session)
    if not owed:
        return None
    batch = PayoutBatch(
        id=new_id("pob"), rail=rail.name if rail.transfers else "manual",
        status=BatchStatus.EXPORTED, total_cents=sum(owed.values()), created_at=now,
    )  # fmt: skip
    payouts = [
        Payout(
            id=new_id("pyo"),
            batch_id=batch.id,
            provider_id=pid,
            job_id=job_id,
            amount_cents=amount,
            currency=currency,
            status=PayoutStatus.PENDING,
            created_at=now,
        )
        for (pid, job_id, currency), amount in sorted(owed.items())
    ]
    batch.csv = _csv(payouts)
    session.add(batch)
    session.flush()
    session.add_all(payouts)
    session.commit()  # the payouts are pending before any money moves
    if rail.transfers:
        _transfer(session, rail, batch, payouts, now=now)
    log.info("payout batch %s: %d payouts, %d cents", batch.id, len(payouts), batch.total_cents)
    return batch


def _transfer(
    session: Session, rail: PaymentRail, batch: PayoutBatch, payouts: list[Payout], *, now: datetime
) -> None:
    for payout in payouts:
        if payout.status != PayoutStatus.PENDING:
            continue
        try:
            destination = connected_account_id(session, rail, payout.provider_id)
            payout.external_id = rail.transfer(
                destination=destination,
                amount_cents=payout.amount_cents,
                currency=payout.currency,
                transfer_group=payout.job_id,
                key=f"payout:{payout.id}",
                metadata={"payout_id": payout.id, "provider_id": payout.provider_id},
            )
        except PaymentError:
            log.warning("payout %s not transferred; it stays pending", payout.id)
            continue
        _post_paid(session, payout, now=now)
        session.commit()  # a transfer Stripe made is posted before the next one is asked for
    done = all(p.status == PayoutStatus.PAID for p in payouts)
    batch.status = BatchStatus.PAID if done else BatchStatus.PARTIAL
    batch.paid_at = now if done else None
    session.add(batch)
    session.commit()  # the batch's state after its transfers, each committed as it went


def mark_paid(session: Session, batch_id: str, *, now: datetime) -> PayoutBatch:
    """The operator sent a manual batch's money: post each payout; idempotent."""
    batch = session.get(PayoutBatch, batch_id) if could_be_id(batch_id) else None
    if batch is None:
        raise NotFoundError(f"no payout batch {batch_id}")
    if batch.rail != "manual":
        raise InvalidStateError("only manual batches are marked paid by hand")
    with unit_of_work(session):
        for payout in batch_payouts(session, batch.id):
            if payout.status == PayoutStatus.PENDING:
                _post_paid(session, payout, now=now)
        batch.status = BatchStatus.PAID
        batch.paid_at = batch.paid_at or now
        session.add(batch)
    return batch


def batch_payouts(session: Session, batch_id: str) -> list[Payout]:
    return list(
        session.exec(
            select(Payout).where(Payout.batch_id == batch_id).order_by(col(Payout.id))
        ).all()
    )


def payout_public(p: Payout) -> PayoutPublic:
    return PayoutPublic.model_validate(p, from_attributes=True)


def batch_public(session: Session, batch: PayoutBatch) -> PayoutBatchPublic:
    return PayoutBatchPublic(
        id=batch.id,
        rail=batch.rail,
        status=batch.status,
        total_cents=batch.total_cents,
        payouts=[payout_public(p) for p in batch_payouts(session, batch.id)],
        csv=batch.csv or None,
        created_at=batch.created_at,
    )
