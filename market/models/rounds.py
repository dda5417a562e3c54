"""Training rounds and the encrypted submissions they collect."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from market.models.schema import Strict
from market.models.types import UTCDateTime, utcnow

RoundState = Literal["collecting", "closed", "published", "failed", "cancelled"]


class Round(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: str = SQLField(primary_key=True, max_length=32)
    job_id: str = SQLField(foreign_key="job.id", index=True, max_length=32)
    number: int
    attempt: int = 1
    state: str = SQLField(default="collecting", max_length=16, index=True)
    deadline: datetime = SQLField(sa_type=UTCDateTime, index=True)
    opened_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    # The global model providers train from in this round.
    model_key: str = SQLField(max_length=200)
    # Current encrypted running sum; a new versioned blob per submission.
    acc_key: str | None = SQLField(default=None, max_length=200)
    acc_count: int = 0
    # The providers inside the sum `acc_key` points at, copied from that sum's own header in
    # the same transaction: settlement pays exactly these.
    acc_providers: list[str] = SQLField(default_factory=list, sa_type=JSON)
    weight_norm: int
    expected: list[str] = SQLField(default_factory=list, sa_type=JSON)
    metrics: dict[str, Any] | None = SQLField(default=None, sa_type=JSON)
    close_reason: str | None = SQLField(default=None, max_length=64)


class Submission(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("round_id", "provider_id"),)

    id: str = SQLField(primary_key=True, max_length=32)
    job_id: str = SQLField(foreign_key="job.id", index=True, max_length=32)
    round_id: str = SQLField(foreign_key="round.id", index=True, max_length=32)
    round_number: int
    attempt: int
    provider_id: str = SQLField(foreign_key="account.id", index=True, max_length=32)
    payload_sha256: str = SQLField(max_length=64)
    # Envelopes are not kept once their update is inside a committed sum (None); older
    # rows name the blob they were stored under.
    envelope_key: str | None = SQLField(default=None, max_length=200)
    size_bytes: int
    samples: int
    weight: float
    accepted_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class SubmissionReceipt(BaseModel):
    submission_id: str
    job_id: str
    round: int
    attempt: int
    payload_sha256: str
    accepted_at: datetime


class RoundPublic(BaseModel):
    """A round as its viewer may see it: a provider sees only whether itself is in."""

    job_id: str
    round: int
    state: RoundState
    attempt: int
    deadline: datetime
    expected_count: int
    expected_providers: list[str]
    submitted: int
    included: list[str]
    you_submitted: bool | None
    weight_norm: int
    param_count: int
    quorum: int
    # The `summands` every envelope of this job is bound to (the job's max_providers).
    summands: int
    metrics: dict[str, float] | None
    close_reason: str | None


class MetricsCreate(Strict):
    """The buyer's evaluation of a round's model: accuracy (classification) or RMSE, MAE and
    R² in the target's own units (regression), and the loss it trains on."""

    loss: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    rmse: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    mae: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    r2: Annotated[float, Field(le=1, allow_inf_nan=False)] | None = None
