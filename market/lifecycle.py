"""The job, round and offer lifecycle as pure data and decisions (no database, no clock).

States are `StrEnum`s defined in :mod:`dataspec.states` (the agents compare against the same
names) and re-exported here, so a state compares equal to the string stored in its row and
serializes as that string. The transition tables are the whole of what may happen; the
decision functions take plain facts (counts, deadlines, the time) and say what to do. The
services load the facts, ask here, apply the answer and commit once.

Job:   draft → funding → open → running → completed | cancelled | failed
Round: collecting → closed → published, or collecting → failed | cancelled
Offer: pending → accepted | declined | expired | withdrawn; accepted → dropped
Listing: active → withdrawn
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

# The state names live in the dependency-light wire package the agents import too.
from dataspec.states import (
    JOB_CANCELLABLE,
    JOB_ENDED,
    JOB_FUNDABLE,
    OFFER_DECIDED,
    ROUND_ABANDONED,
    ROUND_ENDED,
    ROUND_HAS_AGGREGATE,
    BatchStatus,
    JobState,
    ListingState,
    OfferState,
    PaymentStatus,
    PayoutStatus,
    RoundState,
)

__all__ = [
    "JOB_CANCELLABLE",
    "JOB_ENDED",
    "JOB_FUNDABLE",
    "JOB_TRANSITIONS",
    "OFFER_DECIDED",
    "OFFER_TRANSITIONS",
    "ROUND_ABANDONED",
    "ROUND_ENDED",
    "ROUND_HAS_AGGREGATE",
    "ROUND_TRANSITIONS",
    "BatchStatus",
    "Close",
    "Complete",
    "Fail",
    "FailByBuyer",
    "JobState",
    "ListingState",
    "OfferState",
    "PaymentStatus",
    "PayoutStatus",
    "PublishVerdict",
    "Retry",
    "RoundState",
    "RoundVerdict",
    "TransitionError",
    "Wait",
    "check_move",
    "may_move",
    "publish_verdict",
    "round_verdict",
]


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.DRAFT: frozenset({JobState.FUNDING, JobState.CANCELLED}),
    JobState.FUNDING: frozenset({JobState.OPEN, JobState.CANCELLED}),
    JobState.OPEN: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED}),
    JobState.COMPLETED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.FAILED: frozenset(),
}
ROUND_TRANSITIONS: dict[RoundState, frozenset[RoundState]] = {
    RoundState.COLLECTING: frozenset({RoundState.CLOSED, RoundState.FAILED, RoundState.CANCELLED}),
    RoundState.CLOSED: frozenset({RoundState.PUBLISHED}),
    RoundState.PUBLISHED: frozenset(),
    RoundState.FAILED: frozenset(),
    RoundState.CANCELLED: frozenset(),
}
OFFER_TRANSITIONS: dict[OfferState, frozenset[OfferState]] = {
    OfferState.PENDING: frozenset(
        {OfferState.ACCEPTED, OfferState.DECLINED, OfferState.EXPIRED, OfferState.WITHDRAWN}
    ),
    OfferState.ACCEPTED: frozenset({OfferState.DROPPED}),
    OfferState.DECLINED: frozenset(),
    OfferState.EXPIRED: frozenset(),
    OfferState.WITHDRAWN: frozenset(),
    OfferState.DROPPED: frozenset(),
}


S = TypeVar("S", bound=StrEnum)


class TransitionError(ValueError):
    """A state change the lifecycle does not allow (a bug in the caller, never user input)."""


def may_move(table: Mapping[S, frozenset[S]], old: str, new: str) -> bool:
    """Whether `old → new` is in `table` (states given as their stored strings)."""
    for state, targets in table.items():
        if state == old:
            return new in targets
    return False


def check_move(kind: str, table: Mapping[S, frozenset[S]], old: str, new: str) -> None:
    if not may_move(table, old, new):
        raise TransitionError(f"a {kind} may not go from {old} to {new}")


# What to do with a collecting round.


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet."""


@dataclass(frozen=True)
class Close:
    reason: str  # "all-in" or "deadline"


@dataclass(frozen=True)
class Retry:
    """Below quorum at the first deadline: keep what came, drop the rest, try once more."""


@dataclass(frozen=True)
class Fail:
    reason: str


RoundVerdict = Wait | Close | Retry | Fail


def round_verdict(
    *, count: int, expected: int, quorum: int, attempt: int, deadline: datetime, now: datetime
) -> RoundVerdict:
    """The closing rule of a collecting round of a running job.

    `count` updates are in the sum out of `expected`. A round closes as soon as everyone
    expected is in (and at least `quorum` are), or at its deadline with at least `quorum`.
    Below quorum at the deadline, attempt 1 is retried; attempt 2 fails the job.
    """
    if count >= quorum and count >= expected:
        return Close("all-in")
    if deadline > now:
        return Wait()
    if count >= quorum:
        return Close("deadline")
    if attempt == 1:
        return Retry()
    return Fail(f"below quorum twice ({count} of {quorum})")


@dataclass(frozen=True)
class Complete:
    """Past the publication deadline after the last round: the buyer has its model."""


@dataclass(frozen=True)
class FailByBuyer:
    reason: str


PublishVerdict = Wait | Complete | FailByBuyer


def publish_verdict(
    *, round_number: int, rounds_total: int, due: datetime | None, now: datetime
) -> PublishVerdict:
    """A closed round whose next model is not published: wait until `due`, then end the job
    (completed after the last round, failed by the buyer before it)."""
    if due is None or due > now:
        return Wait()
    if round_number >= rounds_total:
        return Complete()
    return FailByBuyer(
        f"failed by the buyer: no model for round {round_number + 1} was published in time"
    )
