"""What a round yields: the encrypted aggregate for the buyer, models, and the buyer's metrics.

The aggregate leaves the server only for a closed round holding at least `quorum` updates,
so a buyer can never isolate one provider's update; no function here returns an envelope.
Models and the aggregate are returned as a `BlobStream` (chunks straight from the store),
never read whole into memory.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from market.blobs import BlobStore, BlobStream
from market.db import unit_of_work
from market.errors import AggregateUnavailableError, InvalidStateError, NotFoundError
from market.lifecycle import ROUND_HAS_AGGREGATE
from market.models import GroupValuesCreate, Job, MetricsCreate, Round
from market.services import groups
from market.services.locks import locked_job, locked_round
from market.services.rounds import load_round
from market.services.submissions import job_context


def open_aggregate(
    session: Session, blobs: BlobStore, job: Job, number: int, *, now: datetime
) -> BlobStream:
    rnd = load_round(session, job, number)
    if rnd.state not in ROUND_HAS_AGGREGATE:
        raise AggregateUnavailableError(f"round {number} is {rnd.state}, not closed")
    if rnd.acc_key is None or rnd.acc_count < job.quorum:
        raise AggregateUnavailableError(
            f"round {number} holds {rnd.acc_count} updates, fewer than the quorum {job.quorum}"
        )
    return blobs.open_read(rnd.acc_key)


def open_round_model(
    session: Session, blobs: BlobStore, job: Job, number: int, *, now: datetime
) -> BlobStream:
    rnd = load_round(session, job, number)
    if rnd.model_key is None:
        raise NotFoundError(f"round {number} has no model")
    return blobs.open_read(rnd.model_key)


def open_final_model(blobs: BlobStore, job: Job) -> BlobStream:
    if job.final_model_key is None:
        raise NotFoundError(f"job {job.id} has no final model")
    return blobs.open_read(job.final_model_key)


def record_metrics(
    session: Session, job: Job, number: int, metrics: MetricsCreate, *, now: datetime
) -> Round:
    """The buyer's evaluation of the model it derived from round `number`'s aggregate."""
    rnd = load_round(session, job, number)
    if rnd.state not in ROUND_HAS_AGGREGATE:
        raise InvalidStateError(f"round {number} is {rnd.state}: no aggregate to evaluate yet")
    with unit_of_work(session):
        rnd.metrics = metrics.model_dump(exclude_none=True)
        session.add(rnd)
    return rnd


def open_group_aggregate(
    session: Session, blobs: BlobStore, job: Job, number: int, index: int
) -> BlobStream:
    """The encrypted sum of one released group of a closed round (each holds ≥ quorum)."""
    rnd = load_round(session, job, number)
    return groups.open_group_aggregate(session, blobs, job_context(blobs, job), rnd, index)


def record_group_values(session: Session, job: Job, number: int, body: GroupValuesCreate) -> Round:
    """The buyer's evaluation of each released group of round `number` (committed)."""
    with locked_job(session, job.id) as job, unit_of_work(session):
        rnd = locked_round(session, job, number)
        groups.record_values(session, rnd, body.groups)
    return rnd
