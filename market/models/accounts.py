"""Accounts: buyers, providers and admins, each authenticated by one hashed API key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import StringConstraints
from sqlmodel import Field, SQLModel

from dataspec.views import AccountCreated, AccountPublic, Role
from market.models.schema import Strict
from market.models.types import UTCDateTime, utcnow

__all__ = ["Account", "AccountCreate", "AccountCreated", "AccountPublic", "DisplayName", "Role"]

DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class AccountCreate(Strict):
    """Self-registration; admin accounts are created by an operator, never over HTTP."""

    role: Literal["buyer", "provider"]
    name: DisplayName


class Account(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    role: str = Field(max_length=16, index=True)
    name: str = Field(max_length=100)
    # SHA-256 of the API key; the key itself is shown once and never stored.
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # A provider counts as a real party (matched to jobs, so inside quorums) only once
    # verified: by its Stripe Connect account's `payouts_enabled` ("stripe-connect") or by
    # an operator's approval (the operator's account id). See `market.services.verification`.
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    verified_by: str | None = Field(default=None, max_length=32)
