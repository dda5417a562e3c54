"""What the server answers and the agents read: accounts, listings, offers, jobs, rounds and
submission receipts, defined once for both sides.

The server declares these as its routes' response models (so they are its OpenAPI
document); the agents' HTTP client parses every answer into them. A view ignores fields it
does not know, so a server that adds a field never breaks an agent already deployed; the
requests an agent sends stay strict (:class:`dataspec.schema.Strict`).

States travel as their names; compare them with :mod:`dataspec.states`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dataspec.jobs import JobCreate
from dataspec.schema import DatasetSchema
from dataspec.states import OfferState, RoundState

__all__ = [
    "AccountCreated",
    "AccountPublic",
    "GroupPublic",
    "JobFunding",
    "JobPublic",
    "ListingPublic",
    "MatchingExclusion",
    "MatchingPublic",
    "OfferPublic",
    "PaymentPublic",
    "PrivacyReportPublic",
    "Role",
    "RoundPublic",
    "RoundSummary",
    "SubmissionReceipt",
    "TickResult",
    "View",
]

Role = Literal["buyer", "provider", "admin"]

# A state read off the wire is its enum member (compare with `dataspec.states`); the API
# documents it inline, as the list of names it has always published.
if TYPE_CHECKING:
    OfferStateName = OfferState
    RoundStateName = RoundState
else:
    OfferStateName = Annotated[
        Literal["pending", "accepted", "declined", "expired", "withdrawn", "dropped"],
        AfterValidator(OfferState),
    ]
    RoundStateName = Annotated[
        Literal["collecting", "closed", "published", "failed", "cancelled"],
        AfterValidator(RoundState),
    ]


class View(BaseModel):
    # A field the server added after this agent was built is ignored, not refused.
    model_config = ConfigDict(extra="ignore")


class AccountPublic(View):
    id: str
    role: Role
    name: str
    created_at: datetime
    verified_at: datetime | None = None
    verified_by: str | None = None


class AccountCreated(AccountPublic):
    api_key: str


class ListingPublic(View):
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


class OfferPublic(View):
    id: str
    job_id: str
    job_title: str
    listing_id: str
    provider_id: str
    state: OfferStateName
    price_cents: int
    currency: str
    samples: int
    rounds: int
    expires_at: datetime
    created_at: datetime
    decided_at: datetime | None


class RoundSummary(View):
    round: int
    state: str
    attempt: int
    deadline: datetime
    submitted: int
    included: list[str]
    metrics: dict[str, float] | None


class JobPublic(View):
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


class PaymentPublic(View):
    id: str
    rail: str
    kind: str
    amount_cents: int
    currency: str
    status: str
    external_id: str | None
    client_secret: str | None


class JobFunding(JobPublic):
    """The job, plus on the `stripe` rail the PaymentIntent to confirm (id, client_secret)."""

    payment: PaymentPublic | None = None


class MatchingExclusion(View):
    reason: str
    listings: int


class MatchingPublic(View):
    """Why an open job has the offers it has: how many active listings could be offered it
    and, for the others, the first rule that leaves them out (counts, never identities)."""

    job_id: str
    state: str
    listings: int
    eligible: int
    offers: dict[str, int]
    min_providers: int
    excluded: list[MatchingExclusion]


class SubmissionReceipt(View):
    submission_id: str
    job_id: str
    round: int
    attempt: int
    payload_sha256: str
    accepted_at: datetime
    # The server's signed `accepted` record and its leaf in the transparency log (the
    # inclusion proof under any later head: GET /v1/log/inclusion).
    record: dict[str, Any] | None = None
    leaf_index: int | None = None


class GroupPublic(View):
    """A round's group as its viewer may see it (a provider: its own group's members only)."""

    index: int
    count: int
    members: list[str]
    merged_into: int | None
    value: float | None
    loss_without: float | None
    loss_with: float | None
    excluded: bool
    reason: str | None


class RoundPublic(View):
    """A round as its viewer may see it: a provider sees only whether itself is in."""

    job_id: str
    round: int
    state: RoundStateName
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
    groups: list[GroupPublic] = []


class TickResult(View):
    rounds_checked: int


class PrivacyReportPublic(View):
    job_id: str
    provider_id: str
    round: int
    epsilon: float
    delta: float
    reported_at: datetime
