"""Training rounds and the encrypted submissions they collect."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from dataspec.states import RoundState
from dataspec.views import GroupPublic, RoundPublic, SubmissionReceipt
from market.models.schema import Strict
from market.models.types import UTCDateTime, utcnow

__all__ = [
    "MAX_LOSS",
    "GroupPublic",
    "GroupValue",
    "GroupValuesCreate",
    "MetricsCreate",
    "Round",
    "RoundGroup",
    "RoundPartial",
    "RoundPublic",
    "RoundState",
    "Submission",
    "SubmissionReceipt",
]


class Round(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: str = SQLField(primary_key=True, max_length=32)
    job_id: str = SQLField(foreign_key="job.id", index=True, max_length=32)
    number: int
    attempt: int = 1
    state: str = SQLField(default=RoundState.COLLECTING, max_length=16, index=True)
    deadline: datetime = SQLField(sa_type=UTCDateTime, index=True)
    opened_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    # The global model providers train from in this round.
    model_key: str = SQLField(max_length=200)
    # The round's encrypted sum, written when the round closes by merging every server
    # process's checkpointed partial sums and replaying the envelopes none of them covers
    # (`market.services.partials`). Rounds collected before partial sums kept a running
    # sum here while collecting.
    acc_key: str | None = SQLField(default=None, max_length=200)
    # Accepted updates so far (collecting); once closed, how many the sum holds.
    acc_count: int = 0
    # Once closed, the providers inside the sum `acc_key` points at, copied from that sum's
    # own header in the same transaction: settlement pays exactly these. Empty while the
    # round collects (its `Submission` rows say who is in; rewriting a list that grows with
    # every update cost O(providers²) bytes a round); a cancelled round's accepted submitters.
    acc_providers: list[str] = SQLField(default_factory=list, sa_type=JSON)
    # SHA-256 of the sum `acc_key` holds: what the signed round-closed record commits to.
    acc_sha256: str | None = SQLField(default=None, max_length=64)
    weight_norm: int
    expected: list[str] = SQLField(default_factory=list, sa_type=JSON)
    metrics: dict[str, Any] | None = SQLField(default=None, sa_type=JSON)
    close_reason: str | None = SQLField(default=None, max_length=64)


class RoundGroup(SQLModel, table=True):
    """One random group of a round's providers and the encrypted sum of its updates.

    The partition is drawn by the server when the round opens (`market.services.groups`);
    at close a group with fewer than `group_size` updates is merged into another
    (`merged_into`), so every sum the buyer may decrypt holds at least `group_size` ≥ quorum
    updates. The buyer reports how each group's average update changed its validation loss.
    """

    __tablename__ = "round_group"
    __table_args__ = (UniqueConstraint("round_id", "index"),)

    id: str = SQLField(primary_key=True, max_length=32)
    round_id: str = SQLField(foreign_key="round.id", index=True, max_length=32)
    index: int
    members: list[str] = SQLField(default_factory=list, sa_type=JSON)
    acc_key: str | None = SQLField(default=None, max_length=200)
    acc_count: int = 0
    acc_providers: list[str] = SQLField(default_factory=list, sa_type=JSON)
    # SHA-256 of the blob `acc_key` as the server wrote it (None for rows from before it was
    # kept): the close checks the blob against it and signs it without reading it again.
    acc_sha256: str | None = SQLField(default=None, max_length=64)
    merged_into: int | None = None
    # The buyer's measure of the group's update (see market.services.groups), and the
    # held-out losses it reported beside it.
    value: float | None = None
    loss_without: float | None = None
    loss_with: float | None = None
    excluded: bool = False
    reason: str | None = SQLField(default=None, max_length=300)


class Submission(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("round_id", "provider_id"),)

    id: str = SQLField(primary_key=True, max_length=32)
    job_id: str = SQLField(foreign_key="job.id", index=True, max_length=32)
    round_id: str = SQLField(foreign_key="round.id", index=True, max_length=32)
    round_number: int
    attempt: int
    provider_id: str = SQLField(foreign_key="account.id", index=True, max_length=32)
    payload_sha256: str = SQLField(max_length=64)
    # The stored envelope, kept until the round's close has committed a sum holding it (then
    # None); None also for rows accepted before envelopes were stored (inside `acc_key`).
    envelope_key: str | None = SQLField(default=None, max_length=200)
    size_bytes: int
    samples: int
    weight: float
    accepted_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class RoundPartial(SQLModel, table=True):
    """A checkpoint of one server process's partial sum of a collecting round, or of one
    random group's sum.

    Each process adds the updates it accepted into a sum of its own in memory and writes it
    out every few updates or seconds; the round's close merges these checkpoints and replays
    from their envelopes the accepted updates none of them covers (`market.services.partials`).
    """

    __tablename__ = "round_partial"

    id: str = SQLField(primary_key=True, max_length=32)
    round_id: str = SQLField(foreign_key="round.id", index=True, max_length=32)
    # None: a part of the round's total; an index: a part of that random group's sum, built
    # from the group's envelopes once all its members are in.
    group_index: int | None = None
    key: str = SQLField(max_length=200)
    count: int
    # The providers whose updates the checkpoint holds (one submission each per round).
    providers: list[str] = SQLField(default_factory=list, sa_type=JSON)
    sha256: str = SQLField(max_length=64)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


# A loss beyond this is a diverged model or a hostile post, not a figure worth charting
# (1.7e308 once overflowed the dashboard's chart ticks and broke the job page).
MAX_LOSS = 1e9


class GroupValue(Strict):
    """The buyer's measure of one released group's average update: `value`, its alignment
    with the other groups' step (about 1 for a group that pulls its weight, 0 for updates of
    zeros, negative against it); the held-out losses of the step with every group and
    without this one; and whether the buyer left the group out of its step (and why)."""

    index: Annotated[int, Field(ge=0, le=10_000)]
    value: Annotated[float, Field(ge=-1, le=2, allow_inf_nan=False)]
    loss_without: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None = None
    loss_with: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None = None
    excluded: bool = False
    reason: Annotated[str, Field(max_length=300)] | None = None


class GroupValuesCreate(Strict):
    groups: Annotated[list[GroupValue], Field(min_length=1, max_length=10_000)]


class MetricsCreate(Strict):
    """The buyer's evaluation of a round's model: accuracy (classification) or RMSE, MAE and
    R² in the target's own units (regression), and the loss it trains on; each bounded so a
    hostile figure never breaks a page that charts it."""

    loss: Annotated[float, Field(ge=0, le=MAX_LOSS, allow_inf_nan=False)]
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    rmse: Annotated[float, Field(ge=0, le=MAX_LOSS, allow_inf_nan=False)] | None = None
    mae: Annotated[float, Field(ge=0, le=MAX_LOSS, allow_inf_nan=False)] | None = None
    r2: Annotated[float, Field(ge=-MAX_LOSS, le=1, allow_inf_nan=False)] | None = None
