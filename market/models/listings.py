"""Dataset listings a provider publishes: metadata only, never data rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints
from sqlalchemy import JSON, BigInteger
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from dataspec.jobs import Cents, Currency
from dataspec.views import ListingPublic
from market.models.schema import DatasetSchema, Strict
from market.models.types import UTCDateTime, utcnow

__all__ = ["Cents", "Currency", "Listing", "ListingCreate", "ListingPublic", "ListingUpdate"]


class ListingCreate(Strict):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    dataset_schema: DatasetSchema = Field(alias="schema")
    samples: Annotated[int, Field(ge=1, le=10**9)]
    ask_cents: Cents
    currency: Currency = "usd"
    # How many jobs this listing may serve at the same time.
    capacity: Annotated[int, Field(ge=1, le=1000)] = 1


class ListingUpdate(Strict):
    ask_cents: Cents | None = None
    capacity: Annotated[int, Field(ge=1, le=1000)] | None = None
    samples: Annotated[int, Field(ge=1, le=10**9)] | None = None


class Listing(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    provider_id: str = SQLField(foreign_key="account.id", index=True, max_length=32)
    name: str = SQLField(max_length=100)
    dataset_schema: dict[str, Any] = SQLField(sa_type=JSON)
    samples: int
    ask_cents: int = SQLField(sa_type=BigInteger)
    currency: str = SQLField(max_length=3)
    capacity: int
    state: str = SQLField(default="active", max_length=16, index=True)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
