"""Training jobs a buyer posts, and the credits that fund them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import JSON, BigInteger
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from crypto import DEFAULT_PRESET_ID
from dataspec import Task, input_width
from market.models.listings import Cents, Currency
from market.models.schema import JobDatasetSchema, Strict
from market.models.types import UTCDateTime, utcnow

JobState = Literal["draft", "funding", "open", "running", "completed", "cancelled", "failed"]
TERMINAL_JOB_STATES = ("completed", "cancelled", "failed")


class LogRegSpec(Strict):
    """Multinomial logistic regression: no hidden layer."""

    arch: Literal["logreg"]


class MLPSpec(Strict):
    """A ReLU multilayer perceptron with the given hidden widths."""

    arch: Literal["mlp"]
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)]


class LinearSpec(Strict):
    """Linear regression: one output, no hidden layer (regression jobs only)."""

    arch: Literal["linear"]


class CNNSpec(Strict):
    """A small convolutional network for image-shaped inputs: the features, in schema order,
    are read as an image of `input_shape` (channels, height, width), then 3x3 convolutions
    with ReLU and 2x2 average pooling, one per entry of `channels`, and ReLU layers of
    `hidden` widths before the output."""

    arch: Literal["cnn"]
    input_shape: Annotated[
        list[Annotated[int, Field(ge=1, le=512)]], Field(min_length=3, max_length=3)
    ]
    channels: Annotated[
        list[Annotated[int, Field(ge=1, le=256)]], Field(min_length=1, max_length=4)
    ] = [8]
    hidden: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=0, max_length=8)
    ] = []


# The registry of architectures a job may ask for; agents build the same ones in torch.
ModelSpec = Annotated[LogRegSpec | MLPSpec | LinearSpec | CNNSpec, Field(discriminator="arch")]


class PrivacySpec(Strict):
    """Record-level differential privacy the buyer asks every provider to train under.

    Providers run DP-SGD (per-example clip ``clip``, Gaussian noise) so that the whole job
    costs each of them at most ``epsilon`` at ``delta``. A provider whose own limit is lower
    declines the offer. Left out, each provider applies its own (default ε = 8); ``"off"``
    asks for updates without DP, which only providers that opted out accept.
    """

    epsilon: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-5
    clip: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0


class JobCreate(Strict):
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    # Must agree with the schema's label: classes for classification, none for regression.
    task: Task = "classification"
    model: ModelSpec
    rounds: Annotated[int, Field(ge=1, le=1000)]
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.1
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    dataset_schema: JobDatasetSchema = Field(alias="schema")
    # Seeds the initial model and every provider's local training: runs are reproducible.
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    min_providers: Annotated[int, Field(ge=2, le=1000)] = 2
    max_providers: Annotated[int, Field(ge=2, le=1000)] = 10
    quorum: Annotated[int, Field(ge=2, le=1000)] = 2
    min_samples: Annotated[int, Field(ge=1, le=10**9)] = 1
    sample_cap: Annotated[int, Field(ge=1, le=10**9)] = 5000
    min_reputation: Annotated[float, Field(ge=0, le=1)] = 0.0
    budget_cents: Annotated[int, Field(ge=1, le=10**12)]
    currency: Currency = "usd"
    price_cap_cents: Cents
    round_deadline_s: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    offer_ttl_s: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    preset: Annotated[str, StringConstraints(min_length=1, max_length=64)] = DEFAULT_PRESET_ID
    privacy: PrivacySpec | Literal["off"] | None = None
    # A provider that sends nothing in a round is not waited for in the rounds after it.
    drop_missed: bool = True
    # Providers per random group whose sum the buyer scores (≥ quorum; None: the quorum).
    group_size: Annotated[int, Field(ge=2, le=1000)] | None = None
    # After a round closes the buyer has this long to publish the next model (or complete
    # the job); past it the job ends as failed by the buyer, at no cost to providers.
    publish_deadline_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400

    @model_validator(mode="after")
    def _coherent(self) -> JobCreate:
        if self.quorum > self.min_providers:
            raise ValueError("quorum cannot exceed min_providers")
        if self.group_size is not None and not self.quorum <= self.group_size:
            raise ValueError("group_size cannot be below the quorum")
        if self.min_providers > self.max_providers:
            raise ValueError("min_providers cannot exceed max_providers")
        if self.dataset_schema.task != self.task:
            raise ValueError(
                f"task is {self.task} but the schema's label "
                + ("lists classes" if self.task == "regression" else "lists no classes")
            )
        arch = self.model.arch
        if arch == "logreg" and self.task == "regression":
            raise ValueError("arch 'logreg' is for classification; use 'linear' or 'mlp'")
        if arch == "linear" and self.task == "classification":
            raise ValueError("arch 'linear' is for regression; use 'logreg' or 'mlp'")
        if isinstance(self.model, CNNSpec):
            c, h, w = self.model.input_shape
            if c * h * w != input_width(self.dataset_schema):
                raise ValueError(
                    f"cnn input_shape {self.model.input_shape} holds {c * h * w} values but "
                    f"the schema gives {input_width(self.dataset_schema)} inputs"
                )
            if min(h, w) < 2 ** len(self.model.channels):
                raise ValueError("cnn: the image is too small for that many pooling layers")
        return self


class Job(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    buyer_id: str = SQLField(foreign_key="account.id", index=True, max_length=32)
    title: str = SQLField(max_length=200)
    state: str = SQLField(default="draft", max_length=16, index=True)
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


class CreditCreate(Strict):
    amount_cents: Annotated[int, Field(ge=1, le=10**12)]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class CreditPublic(BaseModel):
    id: str
    job_id: str
    amount_cents: int
    reference: str | None
    funded_cents: int
    job_state: str
    created_at: datetime


class RoundSummary(BaseModel):
    round: int
    state: str
    attempt: int
    deadline: datetime
    submitted: int
    included: list[str]
    metrics: dict[str, float] | None


class JobPublic(BaseModel):
    """A job's status as its viewer may see it (providers see only themselves)."""

    model_config = ConfigDict(serialize_by_alias=True)

    id: str
    buyer_id: str
    title: str
    state: str
    spec: JobCreate
    rounds_total: int
    current_round: int
    accepted_providers: list[str]
    param_count: int | None
    fingerprint: str | None
    budget_cents: int
    funded_cents: int | None
    currency: str
    failure_reason: str | None
    has_final_model: bool
    rounds: list[RoundSummary]
    created_at: datetime
    updated_at: datetime


class MatchingExclusion(BaseModel):
    reason: str
    listings: int


class MatchingPublic(BaseModel):
    """Why an open job has the offers it has: how many active listings could be offered it
    and, for the others, the first rule that leaves them out (counts, never identities)."""

    job_id: str
    state: str
    listings: int
    eligible: int
    offers: dict[str, int]
    min_providers: int
    excluded: list[MatchingExclusion]
