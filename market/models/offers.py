"""Offers: a job's invitation to one provider's listing, accepted or declined before expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from dataspec.states import OfferState
from dataspec.views import OfferPublic
from market.models.types import UTCDateTime, utcnow

__all__ = ["LIVE_OFFER_STATES", "Offer", "OfferPublic", "OfferState"]

# Offers that hold a listing's capacity and a share of the job's budget.
LIVE_OFFER_STATES = (OfferState.PENDING, OfferState.ACCEPTED)


class Offer(SQLModel, table=True):
    # One offer per provider and job, ever: a provider that declined is not asked again.
    __table_args__ = (UniqueConstraint("job_id", "provider_id"),)

    id: str = Field(primary_key=True, max_length=32)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    listing_id: str = Field(foreign_key="listing.id", index=True, max_length=32)
    provider_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    state: str = Field(default=OfferState.PENDING, max_length=16, index=True)
    price_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    # min(listing samples, job sample cap): what the provider trains on and is weighted by.
    samples: int
    value: float
    # Rounds this offer reserves budget for (rounds left when offered; rounds included once
    # the provider is dropped).
    rounds_committed: int
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
