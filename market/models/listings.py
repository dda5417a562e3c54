"""Dataset listings a provider publishes: metadata only, never data rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import JSON, BigInteger
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from market.models.schema import DatasetSchema, Strict
from market.models.types import UTCDateTime, utcnow

Currency = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]
Cents = Annotated[int, Field(ge=0, le=10**12)]


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


class ListingPublic(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    id: str
    provider_id: str
    name: str
    dataset_schema: DatasetSchema = Field(alias="schema")
    samples: int
    ask_cents: int
    currency: str
    capacity: int
    state: str
    created_at: datetime
    updated_at: datetime
