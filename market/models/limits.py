"""Rows that enforce limits across server processes: counted events per address (failed
authentications, registrations) and the envelope uploads in flight.

Both live in the database because API workers in several processes must share them: a count
kept in one process's memory is multiplied by the number of processes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from market.models.types import UTCDateTime


class RateEvent(SQLModel, table=True):
    """One counted event from one address; rows older than their scope's window are pruned."""

    __tablename__ = "rate_event"
    __table_args__ = (
        Index("ix_rate_event_scope_subject_at", "scope", "subject", "at"),
        Index("ix_rate_event_scope_at", "scope", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # What is counted: `auth-failure`, `registration`.
    scope: str = Field(max_length=16)
    # Who: the client address.
    subject: str = Field(max_length=64)
    at: datetime = Field(sa_type=UTCDateTime)


class UploadClaim(SQLModel, table=True):
    """An envelope upload in flight: at most one per provider per round, in any process.

    Taken before the body is read, released when the upload ends; a claim whose heartbeat
    is older than the upload idle timeout belongs to a process that died, and is taken over.
    """

    __tablename__ = "upload_claim"

    job_id: str = Field(primary_key=True, max_length=32)
    round_number: int = Field(primary_key=True)
    provider_id: str = Field(primary_key=True, max_length=32)
    token: str = Field(max_length=32)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)
