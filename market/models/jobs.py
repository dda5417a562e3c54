"""Training jobs a buyer posts, and the credits that fund them.

The job spec (:class:`JobCreate`, its model and privacy specs) is defined in
:mod:`dataspec.jobs` and re-exported here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

# The job spec and the views of a job are the wire contract's (the agents read them with
# the same classes).
from dataspec.jobs import (
    CNNSpec,
    JobCreate,
    LinearSpec,
    LogRegSpec,
    MLPSpec,
    ModelSpec,
    PrivacySpec,
)
from dataspec.money import CreditCreate, CreditPublic
from dataspec.states import JobState
from dataspec.views import JobPublic, MatchingExclusion, MatchingPublic, RoundSummary
from market.models.types import UTCDateTime, utcnow

__all__ = [
    "TERMINAL_JOB_STATES",
    "CNNSpec",
    "Credit",
    "CreditCreate",
    "CreditPublic",
    "Job",
    "JobCreate",
    "JobPublic",
    "JobState",
    "LinearSpec",
    "LogRegSpec",
    "MLPSpec",
    "MatchingExclusion",
    "MatchingPublic",
    "ModelSpec",
    "PrivacySpec",
    "RoundSummary",
]

TERMINAL_JOB_STATES = (JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED)


class Job(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    buyer_id: str = SQLField(foreign_key="account.id", index=True, max_length=32)
    title: str = SQLField(max_length=200)
    state: str = SQLField(default=JobState.DRAFT, max_length=16, index=True)
    # The validated JobCreate, by alias; the columns below copy what queries need.
    spec: dict[str, Any] = SQLField(sa_type=JSON)
    preset_id: str = SQLField(max_length=64)
    rounds_total: int
    current_round: int = 0
    quorum: int
    min_providers: int
    max_providers: int
    min_samples: int
    sample_cap: int
    min_reputation: float
    budget_cents: int = SQLField(sa_type=BigInteger)
    currency: str = SQLField(max_length=3)
    price_cap_cents: int = SQLField(sa_type=BigInteger)
    round_deadline_s: int
    offer_ttl_s: int
    funded_cents: int = SQLField(default=0, sa_type=BigInteger)
    # The platform fee in basis points, fixed when funding is requested (see settlement).
    fee_bps: int = 500
    fingerprint: str | None = SQLField(default=None, max_length=64)
    context_key: str | None = SQLField(default=None, max_length=200)
    param_count: int | None = None
    # Tensor name → shape of the initial model: every model published later must match it.
    layout: dict[str, list[int]] | None = SQLField(default=None, sa_type=JSON)
    model_key: str | None = SQLField(default=None, max_length=200)
    final_model_key: str | None = SQLField(default=None, max_length=200)
    failure_reason: str | None = SQLField(default=None, max_length=500)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class Credit(SQLModel, table=True):
    """Money credited to a job's funding by an operator (the manual rail)."""

    id: str = SQLField(primary_key=True, max_length=32)
    job_id: str = SQLField(foreign_key="job.id", index=True, max_length=32)
    amount_cents: int = SQLField(sa_type=BigInteger)
    # Idempotency key: crediting twice with the same reference returns the first credit.
    reference: str | None = SQLField(default=None, unique=True, max_length=100)
    admin_id: str = SQLField(foreign_key="account.id", max_length=32)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
