"""The names of every state a job, round, offer, listing or payment can be in.

Defined once, here, so the server's lifecycle (:mod:`market.lifecycle`, which decides the
transitions) and the agents that read a job's or a round's state compare against the same
names. States are `StrEnum`s: a state equals the string stored in its row and sent on the
wire, and serializes as that string.

Job:   draft → funding → open → running → completed | cancelled | failed
Round: collecting → closed → published, or collecting → failed | cancelled
Offer: pending → accepted | declined | expired | withdrawn; accepted → dropped
Listing: active → withdrawn
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    DRAFT = "draft"
    FUNDING = "funding"
    OPEN = "open"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class RoundState(StrEnum):
    COLLECTING = "collecting"
    CLOSED = "closed"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OfferState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    DROPPED = "dropped"


class ListingState(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class PaymentStatus(StrEnum):
    """A payment row's status: Stripe's PaymentIntent status as it reports it (these are the
    ones Pollen acts on), or `recorded` for money the manual rail books."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RECORDED = "recorded"


class PayoutStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"


class BatchStatus(StrEnum):
    EXPORTED = "exported"
    PARTIAL = "partial"
    PAID = "paid"


# Named groups: say what a set of states means once.
JOB_ENDED = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED})
JOB_CANCELLABLE = frozenset({JobState.DRAFT, JobState.FUNDING, JobState.OPEN, JobState.RUNNING})
# A job that holds escrow which may still be spent on rounds (it takes money in and pays out).
JOB_FUNDABLE = frozenset({JobState.FUNDING, JobState.OPEN, JobState.RUNNING})
# A round whose encrypted sum is final: its aggregate and group sums may be released.
ROUND_HAS_AGGREGATE = frozenset({RoundState.CLOSED, RoundState.PUBLISHED})
# A round that ended without a sum: it pays nobody and its partials are garbage.
ROUND_ABANDONED = frozenset({RoundState.FAILED, RoundState.CANCELLED})
ROUND_ENDED = frozenset(
    {RoundState.CLOSED, RoundState.PUBLISHED, RoundState.FAILED, RoundState.CANCELLED}
)
OFFER_DECIDED = frozenset(set(OfferState) - {OfferState.PENDING})
