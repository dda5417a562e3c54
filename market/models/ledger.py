"""Tables of the double-entry ledger: accounts, transactions (the hash-chained journal) and
their postings. The rules they obey are written in `market.ledger`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, BigInteger, Column, ForeignKey, String
from sqlmodel import Field, SQLModel

# What `ledger verify` answers is the wire contract's view, re-exported here.
from dataspec.money import BrokenLink as BrokenLink
from dataspec.money import LedgerReport as LedgerReport
from market.models.types import UTCDateTime, utcnow


class LedgerAccount(SQLModel, table=True):
    """A named account such as `job:<id>:escrow`; created on first use, never changed."""

    __tablename__ = "ledger_account"

    name: str = Field(primary_key=True, max_length=100)
    # The last segment of the name: clearing, escrow, payable, paid, fees or refunds.
    kind: str = Field(max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerTransaction(SQLModel, table=True):
    """One journal entry; `seq` orders the hash chain (unique, so the chain cannot fork)."""

    __tablename__ = "ledger_txn"

    id: str = Field(primary_key=True, max_length=32)
    seq: int = Field(unique=True)
    # Idempotency key: posting the same key again returns this transaction.
    key: str = Field(unique=True, max_length=200)
    kind: str = Field(max_length=16, index=True)
    job_id: str | None = Field(default=None, index=True, max_length=32)
    currency: str = Field(max_length=3)
    memo: str = Field(default="", max_length=500)
    meta: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(unique=True, max_length=64)


class LedgerPosting(SQLModel, table=True):
    """One leg: a signed amount in minor units on one account (never zero)."""

    __tablename__ = "ledger_posting"

    id: str = Field(primary_key=True, max_length=32)
    # Deferred: postings are written before their transaction row, whose insert checks them.
    txn_id: str = Field(
        sa_column=Column(
            String(32),
            ForeignKey("ledger_txn.id", deferrable=True, initially="DEFERRED"),
            nullable=False,
            index=True,
        )
    )
    position: int
    account: str = Field(foreign_key="ledger_account.name", index=True, max_length=100)
    amount: int = Field(sa_type=BigInteger)


class PostingPublic(BaseModel):
    account: str
    amount_cents: int


class TransactionPublic(BaseModel):
    id: str
    seq: int
    key: str
    kind: str
    job_id: str | None
    currency: str
    memo: str
    created_at: datetime
    hash: str
    postings: list[PostingPublic]
