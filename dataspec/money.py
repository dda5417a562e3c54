"""What the server answers about money and reputation: credits, payouts and their batches, a
provider's earnings, reputation scores and their reasons, a job's receipt and the ledger's
verification report, defined once for both sides (see :mod:`dataspec.views`).

Money is an integer number of minor units (cents) with a currency code, never a float. The
per-job breakdowns (`ProviderEarnings.jobs`, `Receipt.providers`, `Receipt.rounds`) travel
as plain JSON objects, as the API has always documented them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from dataspec.schema import Strict
from dataspec.views import PaymentPublic, View

__all__ = [
    "BrokenLink",
    "CreditCreate",
    "CreditPublic",
    "LedgerReport",
    "PayoutBatchPublic",
    "PayoutPublic",
    "PayoutRun",
    "PayoutsView",
    "ProviderEarnings",
    "Receipt",
    "ReputationEventPublic",
    "ReputationPublic",
]

# The classes below carry no docstring where the API documented none: a docstring is the
# schema's description in the server's OpenAPI document.


class CreditCreate(Strict):
    amount_cents: Annotated[int, Field(ge=1, le=10**12)]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class CreditPublic(View):
    id: str
    job_id: str
    amount_cents: int
    reference: str | None
    funded_cents: int
    job_state: str
    created_at: datetime


class PayoutPublic(View):
    id: str
    batch_id: str
    provider_id: str
    job_id: str
    amount_cents: int
    currency: str
    status: str
    external_id: str | None
    created_at: datetime
    paid_at: datetime | None


class PayoutBatchPublic(View):
    id: str
    rail: str
    status: str
    total_cents: int
    payouts: list[PayoutPublic]
    csv: str | None
    created_at: datetime


class ProviderEarnings(View):
    """One provider's money, in one currency, with the per-job breakdown."""

    provider_id: str
    currency: str
    earned_cents: int
    paid_cents: int
    balance_cents: int
    jobs: list[dict[str, Any]]
    payouts: list[PayoutPublic]


class PayoutsView(View):
    earnings: list[ProviderEarnings]
    batches: list[PayoutBatchPublic]


class PayoutRun(View):
    batch: PayoutBatchPublic | None


class ReputationEventPublic(View):
    kind: str
    weight: float
    reason: str
    job_id: str | None
    round: int | None
    at: datetime


class ReputationPublic(View):
    provider_id: str
    name: str
    score: float
    alpha: float
    beta: float
    events: int
    history: list[ReputationEventPublic]


class Receipt(View):
    """What the buyer paid and where it went, to the cent."""

    job_id: str
    state: str
    currency: str
    rail: str
    budget_cents: int
    funded_cents: int
    paid_cents: int
    fees_cents: int
    refunded_cents: int
    escrow_cents: int
    balanced: bool
    fee_bps: int
    providers: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    payments: list[PaymentPublic]
    meta: dict[str, Any] = {}


class BrokenLink(View):
    seq: int
    txn_id: str
    reason: str


class LedgerReport(View):
    """What `ledger verify` found: the chain's head and the first broken link, if any."""

    ok: bool
    transactions: int
    head_hash: str
    broken: BrokenLink | None
    # Per currency: funded = paid + fees + refunded + escrow, recomputed from the postings.
    totals: dict[str, dict[str, int]]
    negative_accounts: list[str]
