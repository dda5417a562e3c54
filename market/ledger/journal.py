"""Posting to the journal, and reading balances back.

`post` is the only writer. It checks the rules of `market.ledger` in Python, returns the
first transaction when its idempotency key was seen before, writes the postings and then the
transaction row (the database re-checks them on that insert), and leaves the commit to the
caller so a posting lands in the same database transaction as the state change it pays for.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, text
from sqlmodel import Session, col, select

from market.db import AdvisoryLock, advisory_xact_lock
from market.errors import (
    IdempotencyConflictError,
    ImmutableLedgerError,
    InsufficientFundsError,
    NonIntegerPostingError,
    TooFewPostingsError,
    UnbalancedTransactionError,
    ZeroPostingError,
)
from market.ledger.chain import GENESIS, canonical, chain_hash
from market.ledger.names import MAY_GO_NEGATIVE, kind_of
from market.models.ledger import LedgerAccount, LedgerPosting, LedgerTransaction
from market.models.types import new_id

log = logging.getLogger(__name__)

Legs = Sequence[tuple[str, int]]
_append_lock = threading.Lock()


def _refuse_change(_mapper: Any, _conn: Any, target: Any) -> None:
    raise ImmutableLedgerError(f"{type(target).__name__} rows are never updated or deleted")


for _cls in (LedgerAccount, LedgerTransaction, LedgerPosting):
    event.listen(_cls, "before_update", _refuse_change)
    event.listen(_cls, "before_delete", _refuse_change)


def check_legs(legs: Legs) -> None:
    """Rule 2 in Python: ≥ 2 postings, none zero, integer amounts summing to zero."""
    if len(legs) < 2:
        raise TooFewPostingsError(f"{len(legs)} posting(s): a transaction needs at least two")
    for account, amount in legs:
        # Checked as given, never coerced first: int(1.9) would quietly post 1.
        if not isinstance(amount, numbers.Integral) or isinstance(amount, bool):
            raise NonIntegerPostingError(
                f"posting on {account} is {amount!r}, not an integer number of minor units",
                account=account,
            )
        if amount == 0:
            raise ZeroPostingError(f"posting of zero on {account}")
        kind_of(account)
    total = sum(amount for _, amount in legs)
    if total != 0:
        raise UnbalancedTransactionError(f"postings sum to {total}, not zero", total=total)


def _legs_of(session: Session, txn_id: str) -> list[tuple[str, int]]:
    rows = session.exec(
        select(LedgerPosting)
        .where(LedgerPosting.txn_id == txn_id)
        .order_by(col(LedgerPosting.position))
    ).all()
    return [(p.account, p.amount) for p in rows]


def find(session: Session, key: str) -> LedgerTransaction | None:
    return session.exec(select(LedgerTransaction).where(LedgerTransaction.key == key)).first()


def _replay(session: Session, first: LedgerTransaction, currency: str, legs: Legs) -> None:
    if first.currency != currency or sorted(_legs_of(session, first.id)) != sorted(legs):
        raise IdempotencyConflictError(
            f"ledger key {first.key!r} was used for a different transaction", txn_id=first.id
        )


def _lock_chain(session: Session) -> None:
    """Serialize appends until the caller commits, so balances and the head read are current.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write statement that touches no
    row still takes the database's write lock (held until commit).
    """
    if session.get_bind().dialect.name == "postgresql":
        advisory_xact_lock(session, AdvisoryLock.LEDGER)
    else:
        session.execute(text("UPDATE ledger_txn SET seq = seq WHERE 1 = 0"))


def _check_balances(session: Session, legs: list[tuple[str, int]], currency: str) -> None:
    """Refuse legs that would take an account other than clearing below zero."""
    for account in sorted({a for a, x in legs if x < 0}):
        if kind_of(account) in MAY_GO_NEGATIVE:
            continue
        after = balance(session, account, currency) + sum(x for a, x in legs if a == account)
        if after < 0:
            raise InsufficientFundsError(
                f"{account} would go to {after} {currency}", account=account
            )


def _add_postings(session: Session, legs: list[tuple[str, int]], now: datetime) -> str:
    """The accounts the legs name (made on first use) and one posting per leg; the new
    transaction's id."""
    for account in sorted({a for a, _ in legs}):
        if session.get(LedgerAccount, account) is None:
            session.add(LedgerAccount(name=account, kind=kind_of(account), created_at=now))
    txn_id = new_id("ltx")
    for position, (account, amount) in enumerate(legs):
        session.add(
            LedgerPosting(
                id=new_id("lpo"), txn_id=txn_id, position=position, account=account, amount=amount
            )
        )
    session.flush()
    return txn_id


def _chain_head(session: Session) -> tuple[int, str]:
    """The next transaction's sequence number and the hash it links to."""
    head = session.exec(
        select(LedgerTransaction).order_by(col(LedgerTransaction.seq).desc()).limit(1)
    ).first()
    return (head.seq + 1, head.hash) if head is not None else (1, GENESIS)


def _add_transaction(
    session: Session,
    txn_id: str,
    legs: list[tuple[str, int]],
    now: datetime,
    *,
    key: str,
    kind: str,
    currency: str,
    job_id: str | None,
    memo: str,
    meta: dict[str, Any],
) -> LedgerTransaction:
    """The transaction row linked to the chain's head, and its leaf in the transparency log."""
    seq, prev = _chain_head(session)
    body = canonical(
        seq=seq,
        txn_id=txn_id,
        key=key,
        kind=kind,
        job_id=job_id,
        currency=currency,
        memo=memo,
        meta=meta,
        created_at=now,
        postings=legs,
    )
    txn = LedgerTransaction(
        id=txn_id,
        seq=seq,
        key=key,
        kind=kind,
        job_id=job_id,
        currency=currency,
        memo=memo,
        meta=meta,
        created_at=now,
        prev_hash=prev,
        hash=chain_hash(prev, body),
    )
    session.add(txn)
    session.flush()
    # Its leaf in the transparency log commits with it, under the same lock.
    from market.translog.log import append_ledger

    append_ledger(session, txn.hash, body, job_id=job_id, now=now)
    return txn


def post(
    session: Session,
    *,
    key: str,
    kind: str,
    currency: str,
    legs: Legs,
    now: datetime,
    job_id: str | None = None,
    memo: str = "",
    meta: dict[str, Any] | None = None,
) -> LedgerTransaction:
    """Append one balanced transaction (flushed, not committed); idempotent on `key`."""
    check_legs(legs)
    legs = [(a, int(x)) for a, x in legs]  # numpy integers become plain ints
    first = find(session, key)
    if first is not None:
        _replay(session, first, currency, legs)
        return first
    with _append_lock:
        _lock_chain(session)
        _check_balances(session, legs, currency)
        txn_id = _add_postings(session, legs, now)
        txn = _add_transaction(
            session,
            txn_id,
            legs,
            now,
            key=key,
            kind=kind,
            currency=currency,
            job_id=job_id,
            memo=memo,
            meta=meta or {},
        )
    log.info("ledger %d %s %s: %s", txn.seq, kind, key, legs)
    return txn


def balance(session: Session, account: str, currency: str) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(LedgerPosting.amount), 0))
        .join(LedgerTransaction, col(LedgerTransaction.id) == col(LedgerPosting.txn_id))
        .where(LedgerPosting.account == account, LedgerTransaction.currency == currency)
    ).one()
    return int(total)


def balances(
    session: Session, *, prefix: str | None = None, job_id: str | None = None
) -> dict[tuple[str, str], int]:
    """(account, currency) → balance, optionally for accounts under `prefix` or one job's
    transactions."""
    stmt = (
        select(LedgerPosting.account, LedgerTransaction.currency, func.sum(LedgerPosting.amount))
        .join(LedgerTransaction, col(LedgerTransaction.id) == col(LedgerPosting.txn_id))
        .group_by(col(LedgerPosting.account), col(LedgerTransaction.currency))
    )
    if prefix is not None:
        stmt = stmt.where(col(LedgerPosting.account).startswith(prefix))
    if job_id is not None:
        stmt = stmt.where(LedgerTransaction.job_id == job_id)
    return {(a, c): int(s) for a, c, s in session.exec(stmt).all()}


def _bucket(rows: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for (account, _), amount in rows.items():
        kind = kind_of(account)
        if kind == "clearing":
            out["funded"] -= amount
        elif kind in ("payable", "paid"):
            out["paid"] += amount
        else:
            out[{"escrow": "escrow", "fees": "fees", "refunds": "refunded"}[kind]] += amount
    return {k: out[k] for k in ("funded", "paid", "fees", "refunded", "escrow")}


def job_totals(session: Session, job_id: str) -> dict[str, int]:
    """funded, paid, fees, refunded and escrow of one job, from its transactions."""
    return _bucket(balances(session, job_id=job_id))


def totals(session: Session, currency: str) -> dict[str, int]:
    """The platform-wide figures in one currency."""
    return _bucket({k: v for k, v in balances(session).items() if k[1] == currency})


def transactions(session: Session, *, job_id: str | None = None) -> list[LedgerTransaction]:
    stmt = select(LedgerTransaction).order_by(col(LedgerTransaction.seq))
    if job_id is not None:
        stmt = stmt.where(LedgerTransaction.job_id == job_id)
    return list(session.exec(stmt).all())
