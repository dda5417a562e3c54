"""Rows that track money outside the ledger: payment-rail objects (a job's PaymentIntent and
refunds), payout batches and payouts, providers' connected accounts, and reputation events.

These rows are mutable status trackers; the amounts that count are the ledger's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Text, text
from sqlmodel import Field, SQLModel

# The answers about money are the wire contract's views, re-exported here.
from dataspec.money import PayoutBatchPublic as PayoutBatchPublic
from dataspec.money import PayoutPublic as PayoutPublic
from dataspec.money import ProviderEarnings as ProviderEarnings
from dataspec.money import Receipt as Receipt
from dataspec.money import ReputationEventPublic as ReputationEventPublic
from dataspec.money import ReputationPublic as ReputationPublic
from dataspec.views import PaymentPublic as PaymentPublic
from market.models.types import UTCDateTime, utcnow


class Payment(SQLModel, table=True):
    """A movement with the buyer on a rail: `funding` (a PaymentIntent) or `refund`."""

    id: str = Field(primary_key=True, max_length=32)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    rail: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    amount_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    # requires_payment_method, processing, succeeded, failed (funding); recorded, succeeded
    # (refund).
    status: str = Field(max_length=32, index=True)
    external_id: str | None = Field(default=None, unique=True, max_length=100)
    client_secret: str | None = Field(default=None, max_length=200)
    key: str = Field(unique=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ConnectedAccount(SQLModel, table=True):
    """A provider's Stripe Connect account, created on its first payout."""

    __tablename__ = "connected_account"

    provider_id: str = Field(primary_key=True, foreign_key="account.id", max_length=32)
    external_id: str = Field(unique=True, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PayoutBatch(SQLModel, table=True):
    """One payout run: Stripe transfers sent at once, or a manual CSV to be marked paid."""

    __tablename__ = "payout_batch"

    id: str = Field(primary_key=True, max_length=32)
    rail: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)  # exported, paid, partial
    total_cents: int = Field(sa_type=BigInteger)
    csv: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Payout(SQLModel, table=True):
    """What one provider is paid for one job in one batch."""

    # Two payout runs at once must never pay one payable twice: at most one pending payout
    # per provider, job and currency, whatever the code above the database does.
    __table_args__ = (
        Index(
            "uq_payout_pending",
            "provider_id",
            "job_id",
            "currency",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    batch_id: str = Field(foreign_key="payout_batch.id", index=True, max_length=32)
    provider_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    amount_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16, index=True)  # pending, paid, failed
    external_id: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReputationEvent(SQLModel, table=True):
    """One recorded reason for a provider's reputation to move (never edited)."""

    __tablename__ = "reputation_event"

    id: str = Field(primary_key=True, max_length=32)
    provider_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    kind: str = Field(max_length=32)
    # > 0 feeds α (good behaviour), < 0 feeds β.
    weight: float
    reason: str = Field(max_length=300)
    job_id: str | None = Field(default=None, index=True, max_length=32)
    round_number: int | None = None
    key: str = Field(unique=True, max_length=200)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
