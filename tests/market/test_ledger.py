"""The ledger's rules, in Python and in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from market import ledger
from market.db import make_engine
from market.errors import (
    IdempotencyConflictError,
    ImmutableLedgerError,
    InsufficientFundsError,
    NonIntegerPostingError,
    TooFewPostingsError,
    UnbalancedTransactionError,
    ZeroPostingError,
)
from market.models import LedgerPosting, LedgerTransaction

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ESCROW = ledger.job_escrow("job_a")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def fund(session: Session, amount: int = 1000, key: str = "fund:a") -> LedgerTransaction:
    txn = ledger.post(
        session,
        key=key,
        kind="fund",
        currency="usd",
        legs=[(ledger.CLEARING, -amount), (ESCROW, amount)],
        job_id="job_a",
        now=NOW,
    )
    session.commit()
    return txn


def test_balanced_postings_verify(engine: Engine) -> None:
    """Funding then settling leaves balances that verify and add up to the cent."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s)
        ledger.post(
            s,
            key="settle:1",
            kind="settle",
            currency="usd",
            legs=[(ESCROW, -300), (ledger.provider_payable("p1"), 285), (ledger.FEES, 15)],
            job_id="job_a",
            now=NOW,
        )
        s.commit()
        assert ledger.balance(s, ESCROW, "usd") == 700
        assert ledger.job_totals(s, "job_a") == {
            "funded": 1000, "paid": 285, "fees": 15, "refunded": 0, "escrow": 700,
        }  # fmt: skip
        report = ledger.verify(s)
    assert report.ok and report.transactions == 2 and report.broken is None
    assert report.totals["usd"]["funded"] == 1000


def test_replay_with_same_key_changes_nothing(engine: Engine) -> None:
    """Posting the same key twice returns the first transaction; balances move once."""
    with Session(engine, expire_on_commit=False) as s:
        first = fund(s)
        again = fund(s)
        assert again.id == first.id
        assert ledger.balance(s, ESCROW, "usd") == 1000
        assert ledger.verify(s).transactions == 1


def test_same_key_other_content_is_refused(engine: Engine) -> None:
    """An idempotency key reused for a different amount is a conflict, not a second posting."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s)
        with pytest.raises(IdempotencyConflictError):
            fund(s, amount=999)
        assert ledger.balance(s, ESCROW, "usd") == 1000


@pytest.mark.parametrize(
    ("legs", "error"),
    [
        ([(ESCROW, 5), (ledger.CLEARING, -4)], UnbalancedTransactionError),
        ([(ESCROW, 0), (ledger.CLEARING, 0)], ZeroPostingError),
        ([(ESCROW, 0)], TooFewPostingsError),
        # Issue 11: `int()` before the check stored -1.9 / +1.9 silently as -1 / +1.
        ([(ledger.CLEARING, -1.9), (ESCROW, 1.9)], NonIntegerPostingError),
        ([(ledger.CLEARING, -1.0), (ESCROW, 1.0)], NonIntegerPostingError),
        ([(ledger.CLEARING, -1), (ESCROW, True)], NonIntegerPostingError),
        ([(ledger.CLEARING, "-5"), (ESCROW, "5")], NonIntegerPostingError),
    ],
)
def test_python_rules(engine: Engine, legs: list[tuple[str, int]], error: type[Exception]) -> None:
    """Each accounting rule has its own exception, raised before anything is written."""
    with Session(engine, expire_on_commit=False) as s:
        with pytest.raises(error):
            ledger.post(s, key="bad", kind="fund", currency="usd", legs=legs, now=NOW)
        s.rollback()
        assert ledger.verify(s).transactions == 0


def test_escrow_never_goes_negative(engine: Engine) -> None:
    """Taking more out of an escrow than it holds is refused; only clearing may go negative."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s, 100)
        with pytest.raises(InsufficientFundsError):
            ledger.post(
                s,
                key="over",
                kind="settle",
                currency="usd",
                legs=[(ESCROW, -101), (ledger.provider_payable("p"), 101)],
                now=NOW,
            )
        s.rollback()
        assert ledger.balance(s, ESCROW, "usd") == 100


def test_orm_refuses_update_and_delete(engine: Engine) -> None:
    """The ORM refuses to change or delete a journal row."""
    with Session(engine, expire_on_commit=False) as s:
        txn = fund(s)
        txn.memo = "rewritten"
        s.add(txn)
        with pytest.raises(ImmutableLedgerError):
            s.commit()
        s.rollback()
        s.delete(s.get(LedgerTransaction, txn.id))
        with pytest.raises(ImmutableLedgerError):
            s.commit()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_posting SET amount = amount * 2",
        "DELETE FROM ledger_posting",
        "UPDATE ledger_txn SET memo = 'x'",
        "DELETE FROM ledger_txn",
        "UPDATE ledger_account SET kind = 'fees'",
        "DELETE FROM ledger_account",
    ],
)
def test_database_refuses_rewrites(engine: Engine, sql: str) -> None:
    """Raw SQL cannot update or delete the journal: the database itself refuses."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(sql))
    with Session(engine, expire_on_commit=False) as s:
        assert ledger.verify(s).ok
        assert ledger.balance(s, ESCROW, "usd") == 1000


def _raw_txn(conn: object, txn_id: str, amounts: list[int]) -> None:
    assert hasattr(conn, "execute")
    for i, amount in enumerate(amounts):
        conn.execute(
            text(
                "INSERT INTO ledger_posting (id, txn_id, position, account, amount) "
                "VALUES (:id, :t, :i, :a, :x)"
            ),
            {"id": f"{txn_id}_{i}", "t": txn_id, "i": i, "a": ESCROW, "x": amount},
        )
    conn.execute(
        text(
            "INSERT INTO ledger_txn (id, seq, key, kind, currency, memo, meta, created_at, "
            "prev_hash, hash) VALUES (:id, 99, :id, 'fund', 'usd', '', '{}', :at, :h, :id)"
        ),
        {"id": txn_id, "at": NOW.replace(tzinfo=None), "h": ledger.GENESIS},
    )


@pytest.mark.parametrize("amounts", [[500, -499], [500], [0, 0]])
def test_database_refuses_unbalanced_transaction(engine: Engine, amounts: list[int]) -> None:
    """Raw SQL cannot record a transaction whose postings do not balance (checked at commit)."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s)
    with pytest.raises((DBAPIError, IntegrityError), match="ledger"), engine.begin() as conn:
        _raw_txn(conn, "ltx_raw", amounts)
    with Session(engine, expire_on_commit=False) as s:
        assert ledger.verify(s).transactions == 1


def _tamper(engine: Engine, sql: str) -> None:
    """Rewrite a row behind the triggers' back, as an attacker with DDL rights could."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(sql))
        else:
            conn.execute(text("DROP TRIGGER ledger_posting_no_update"))
            conn.execute(text(sql))


def test_verify_names_first_broken_link(engine: Engine) -> None:
    """A posting rewritten behind the triggers is found: verify names its transaction."""
    with Session(engine, expire_on_commit=False) as s:
        fund(s, 1000, "fund:1")
        second = fund(s, 500, "fund:2")
        fund(s, 200, "fund:3")
        assert ledger.verify(s).ok
    _tamper(
        engine,
        f"UPDATE ledger_posting SET amount = amount + 1 WHERE txn_id = '{second.id}' "
        "AND position = 1",
    )
    with Session(engine, expire_on_commit=False) as s:
        report = ledger.verify(s)
    assert not report.ok
    assert report.broken is not None
    assert (report.broken.seq, report.broken.txn_id) == (2, second.id)
    assert "sum" in report.broken.reason


def test_verify_detects_rehashed_rewrite(engine: Engine) -> None:
    """Rewriting a memo and its own hash still breaks the chain at the next transaction."""
    with Session(engine, expire_on_commit=False) as s:
        first = fund(s, 1000, "fund:1")
        second = fund(s, 500, "fund:2")
        legs = [(p.account, p.amount) for p in s.query(LedgerPosting).filter_by(txn_id=first.id)]
    body = ledger.canonical(
        seq=1, txn_id=first.id, key=first.key, kind=first.kind, job_id=first.job_id,
        currency="usd", memo="nothing to see", meta={}, created_at=first.created_at,
        postings=legs,
    )  # fmt: skip
    new_hash = ledger.chain_hash(ledger.GENESIS, body)
    if engine.dialect.name == "postgresql":
        _tamper(engine, f"UPDATE ledger_txn SET memo = 'nothing to see', hash = '{new_hash}' "
                f"WHERE id = '{first.id}'")  # fmt: skip
    else:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER ledger_txn_no_update"))
            conn.execute(
                text("UPDATE ledger_txn SET memo = 'nothing to see', hash = :h WHERE id = :i"),
                {"h": new_hash, "i": first.id},
            )
    with Session(engine, expire_on_commit=False) as s:
        report = ledger.verify(s)
    assert report.broken is not None and report.broken.txn_id == second.id
    assert "prev_hash" in report.broken.reason


def test_ledger_and_matching_do_not_share_a_lock(engine: Engine) -> None:
    """A ledger append in progress does not hold up a matching pass on PostgreSQL.

    Issue 11: both used advisory lock 0x706F6C6C656E, so every settlement stalled matching
    (and the reverse) until it committed.
    """
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks exist on PostgreSQL only")
    from concurrent.futures import ThreadPoolExecutor

    from market.services.matching import run_matching

    with Session(engine, expire_on_commit=False) as appending:
        ledger.post(
            appending, key="held", kind="fund", currency="usd",
            legs=[(ledger.CLEARING, -5), (ESCROW, 5)], now=NOW,
        )  # fmt: skip
        # The append's lock is held until this session commits.

        def match() -> list[str]:
            with Session(engine, expire_on_commit=False) as other:
                other.execute(text("SET lock_timeout = '3s'"))
                return run_matching(other, now=NOW)

        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(match).result(timeout=10) == []
        appending.commit()
