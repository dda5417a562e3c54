"""The round state machine of DESIGN.md, with deadlines enforced by the server.

Job: draft → funding → open → running → completed | cancelled | failed.
Round: collecting → closed → published (or failed / cancelled).

A round closes when every expected provider has submitted (and at least `quorum` have), or
at its deadline if at least `quorum` have. Below quorum at the deadline, attempt 1 is retried
once: same round number, submissions kept, providers that did not submit are dropped from the
job and matching fills their places with fresh offers, fresh deadline. Attempt 2 below quorum
fails the job. `tick` applies this to every overdue round (the app's background task calls
it, in every server process), and every write that touches a round (a submission, a
published model, an offer decision) applies it first, under the job's lock
(`market.services.locks`). Reading a round never changes it.

The rules themselves are `market.lifecycle.round_verdict` and `publish_verdict`: here the
facts are loaded and the verdict applied. Only `tick` and `publish_model` (the entry points)
commit, through `market.db.unit_of_work`; the helpers leave committing to their caller (a
retry's matching pass runs after that commit, in its own transaction: `run_matching`).

Quorum counts real parties: every provider a round expects was verified when matched
(an operator's approval or a Stripe Connect account with payouts enabled; unverified ones are
never matched, see `market.services.verification`), so `quorum` submitters are `quorum`
parties someone vouched for, never a buyer's sybil accounts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from crypto import weight_norm
from market import blobkeys, weights
from market import lifecycle as lc
from market.blobs import BlobStore, TempBlob
from market.db import unit_of_work
from market.errors import InvalidStateError, NotFoundError
from market.lifecycle import JobState, OfferState, RoundState
from market.models import Job, Offer, Round, Submission
from market.models.types import new_id
from market.services import groups, merging, partials, settlement, trust
from market.services.locks import job_unless_busy, locked_job, locked_round
from market.services.matching import run_matching
from market.translog import current

log = logging.getLogger(__name__)


def participants(session: Session, job_id: str) -> Sequence[Offer]:
    return session.exec(
        select(Offer).where(Offer.job_id == job_id, Offer.state == OfferState.ACCEPTED)
    ).all()


def submitters(session: Session, rnd: Round) -> list[str]:
    return list(session.exec(select(Submission.provider_id).where(Submission.round_id == rnd.id)))


def find_round(session: Session, job_id: str, number: int) -> Round | None:
    return session.exec(select(Round).where(Round.job_id == job_id, Round.number == number)).first()


def load_round(session: Session, job: Job, number: int) -> Round:
    """The round as stored (404 if it does not exist); reading changes nothing."""
    rnd = find_round(session, job.id, number)
    if rnd is None:
        raise NotFoundError(f"job {job.id} has no round {number}")
    return rnd


def start_job(session: Session, job: Job, *, now: datetime) -> Round:
    """Enough providers accepted: run the job; the uploaded initial model is round 1's
    (the caller commits)."""
    assert job.model_key is not None
    job.state = JobState.RUNNING
    job.current_round = 1
    job.updated_at = now
    log.info("job %s starts", job.id)
    return open_round(session, job, 1, job.model_key, now=now)


def open_round(session: Session, job: Job, number: int, model_key: str, *, now: datetime) -> Round:
    """Round `number` starts collecting, with its random groups (the caller commits)."""
    accepted = participants(session, job.id)
    rnd = Round(
        id=new_id("rnd"),
        job_id=job.id,
        number=number,
        deadline=now + timedelta(seconds=job.round_deadline_s),
        opened_at=now,
        model_key=model_key,
        weight_norm=weight_norm(min(o.samples, job.sample_cap) for o in accepted),
        expected=expected_in_round(session, job, number, accepted),
    )
    session.add(rnd)
    session.add(job)
    session.flush()
    groups.open_groups(session, job, rnd)
    return rnd


def expected_in_round(
    session: Session, job: Job, number: int, accepted: Sequence[Offer]
) -> list[str]:
    """Who round `number` waits for: the accepted providers, minus (the job's `drop_missed`,
    on by default) those expected in the previous round that sent nothing, so one gone
    provider costs the job one deadline, not one per round. Never below quorum: then the
    round waits for everyone, as before."""
    everyone = sorted(o.provider_id for o in accepted)
    previous = find_round(session, job.id, number - 1) if number > 1 else None
    if previous is None or not job.spec.get("drop_missed", True):
        return everyone
    sent = set(submitters(session, previous))
    kept = [p for p in everyone if p in sent or p not in previous.expected]
    return kept if len(kept) >= job.quorum else everyone


def join_round(session: Session, job: Job, offer: Offer) -> None:
    """A provider accepted while the job runs: it joins the collecting round, if any (the
    caller commits)."""
    rnd = find_round(session, job.id, job.current_round)
    if rnd is None or rnd.state != RoundState.COLLECTING or offer.provider_id in rnd.expected:
        return
    rnd.expected = sorted([*rnd.expected, offer.provider_id])
    # Weights already submitted were computed with the current norm; keep it stable then.
    # A later joiner with more samples than the norm is weighted as the norm (weight ≤ 1).
    if rnd.acc_count == 0:
        rnd.weight_norm = weight_norm(
            min(o.samples, job.sample_cap) for o in participants(session, job.id)
        )
    session.add(rnd)


def close_round(session: Session, job: Job, rnd: Round, *, now: datetime, reason: str) -> None:
    """Close a round that holds at least `quorum` updates: its aggregate becomes available.

    The round's settlement (escrow → payables of the providers inside the sum, and fees)
    and its reputation events are written in the same database transaction, which the
    caller commits (it holds the job's lock until then).
    """
    started = time.monotonic()
    rnd.state = RoundState.CLOSED
    rnd.closed_at = now
    rnd.close_reason = reason
    session.add(rnd)
    # The processes' partial sums merged, the rest replayed from envelopes: what it holds
    # becomes `acc_providers`, what the record below signs and settlement pays.
    merging.close_sums(session, job, rnd)
    partials.delete_after_commit(session, groups.seal(session, job, rnd))
    summed = time.monotonic()
    # The signed promise of exactly which updates the aggregate holds, before its payments.
    trust.log_round_closed(session, current(), job, rnd, rnd.acc_sha256, now=now)
    settlement.on_round_closed(session, job, rnd, now=now)
    # Under the job's lock until the caller commits: what every other decision on it waited.
    log.info(
        "job %s round %d closed (%s, %d updates) in %.2f s: sums %.2f s, settlement %.2f s",
        job.id, rnd.number, reason, rnd.acc_count, time.monotonic() - started,
        summed - started, time.monotonic() - summed,
    )  # fmt: skip


def fail_job(session: Session, job: Job, rnd: Round | None, *, now: datetime, reason: str) -> None:
    """The job cannot go on: the unspent escrow is refunded to the buyer (the caller commits)."""
    if rnd is not None:
        settlement.on_round_missed(
            session, job, rnd, sorted(set(rnd.expected) - set(submitters(session, rnd))), now=now
        )
        rnd.state = RoundState.FAILED
        rnd.closed_at = now
        rnd.close_reason = reason
        session.add(rnd)
    job.state = JobState.FAILED
    job.failure_reason = reason
    job.updated_at = now
    session.add(job)
    withdraw_pending_offers(session, job, now=now)
    settlement.on_job_ended(session, job, now=now)
    log.warning("job %s failed: %s", job.id, reason)


def retry_round(session: Session, job: Job, rnd: Round, *, now: datetime) -> None:
    """Attempt 2 of a round below quorum at its deadline: the submitters are kept, the
    silent providers dropped, the deadline moved. The matching pass that fills the dropped
    places runs once the caller's unit of work commits the retry.
    """
    done = set(submitters(session, rnd))
    settlement.on_round_missed(session, job, rnd, sorted(set(rnd.expected) - done), now=now)
    for offer in participants(session, job.id):
        if offer.provider_id in done:
            continue
        offer.state = OfferState.DROPPED
        offer.decided_at = now
        # Budget stays reserved only for the rounds the provider actually took part in.
        offer.rounds_committed = int(
            session.exec(
                select(func.count())
                .select_from(Submission)
                .where(Submission.job_id == job.id, Submission.provider_id == offer.provider_id)
            ).one()
        )
        session.add(offer)
    rnd.attempt = 2
    rnd.deadline = now + timedelta(seconds=job.round_deadline_s)
    rnd.expected = sorted(done)
    session.add(rnd)
    log.info("job %s round %d retried with %d kept updates", job.id, rnd.number, len(done))
    # Once the retry commits, a matching pass fills the dropped places with fresh offers.
    run_matching(session, now=now, job_ids=[job.id])


def check_round(session: Session, job: Job, rnd: Round, *, now: datetime) -> lc.RoundVerdict:
    """Apply the closing rules (`lifecycle.round_verdict`) to a collecting round of a
    running job and return the verdict applied (`Wait` for any other round). The caller
    holds the job's lock and commits; a retry's matching pass commits it earlier."""
    if rnd.state != lc.RoundState.COLLECTING or job.state != lc.JobState.RUNNING:
        return lc.Wait()
    verdict = lc.round_verdict(
        count=rnd.acc_count,
        expected=len(rnd.expected),
        quorum=job.quorum,
        attempt=rnd.attempt,
        deadline=rnd.deadline,
        now=now,
    )
    match verdict:
        case lc.Close(reason):
            close_round(session, job, rnd, now=now, reason=reason)
        case lc.Retry():
            retry_round(session, job, rnd, now=now)
        case lc.Fail(reason):
            fail_job(session, job, rnd, now=now, reason=f"round {rnd.number} {reason}")
        case lc.Wait():
            pass
    return verdict


def withdraw_pending_offers(session: Session, job: Job, *, now: datetime) -> None:
    """A job that ended no longer wants the offers nobody answered (the caller commits)."""
    for offer in session.exec(
        select(Offer).where(Offer.job_id == job.id, Offer.state == OfferState.PENDING)
    ):
        offer.state = OfferState.WITHDRAWN
        offer.decided_at = now
        session.add(offer)


def tick(session: Session, *, now: datetime) -> int:
    """Expire offers and enforce every passed round deadline; returns how many rounds moved.

    Every server process runs this. Each overdue round is decided in its own transaction
    under its job's lock, and a job another thread or process is deciding right now is
    skipped (it will be seen again on the next pass), so the passes of several processes
    converge: a round is closed once, and one failing job does not abandon the others.
    """
    # This process's partial sums older than `checkpoint_seconds` are written out, and the
    # envelopes of rounds that ended without a sum are deleted.
    partials.flush_due(session.get_bind())  # type: ignore[arg-type]
    with unit_of_work(session):
        merging.sweep(session)
        expired = session.exec(
            select(Offer).where(Offer.state == OfferState.PENDING, col(Offer.expires_at) <= now)
        ).all()
        for offer in expired:
            offer.state = OfferState.EXPIRED
            offer.decided_at = now
            session.add(offer)
    if expired:
        run_matching(session, now=now)
    overdue = session.exec(
        select(Round.job_id, Round.number).where(
            Round.state == RoundState.COLLECTING, col(Round.deadline) <= now
        )
    ).all()
    moved = 0
    for job_id, number in [*overdue, *_unpublished(session, now)]:
        try:
            with job_unless_busy(session, job_id) as job:
                if job is None:
                    continue
                with unit_of_work(session):
                    rnd = locked_round(session, job, number)
                    before = (rnd.state, rnd.attempt, job.state)
                    check_round(session, job, rnd, now=now)
                    end_if_unpublished(session, job, rnd, now=now)
                moved += (rnd.state, rnd.attempt, job.state) != before
        except Exception:  # one job's failure must not stop the pass for the others
            session.rollback()  # the unit of work rolled back; this covers taking the lock
            log.exception("deadline of job %s round %d not applied", job_id, number)
    return moved


def publish_deadline(job: Job, rnd: Round) -> datetime | None:
    """When the buyer must have published the model after `rnd` (or completed the job)."""
    if rnd.state != RoundState.CLOSED or rnd.closed_at is None:
        return None
    return rnd.closed_at + timedelta(seconds=int(job.spec.get("publish_deadline_s", 86400)))


def _unpublished(session: Session, now: datetime) -> list[tuple[str, int]]:
    """(job, round) of running jobs whose closed round waits past its publication deadline."""
    rows = session.exec(
        select(Job, Round)
        .join(Round, col(Round.job_id) == col(Job.id))
        .where(Job.state == JobState.RUNNING, Round.state == RoundState.CLOSED)
    ).all()
    return [
        (job.id, rnd.number)
        for job, rnd in rows
        if (due := publish_deadline(job, rnd)) is not None and due <= now
    ]


def end_if_unpublished(
    session: Session, job: Job, rnd: Round, *, now: datetime
) -> lc.PublishVerdict:
    """A buyer that never publishes the next model must not hold providers forever: past the
    publication deadline (`lifecycle.publish_verdict`) the job ends; returns the verdict
    applied. The caller holds the job's lock and commits.

    After the last round the buyer has its model: the job completes. Before it, the job
    fails by the buyer: the rest of the escrow is refunded, every offer is released, and no
    provider loses reputation (none is recorded)."""
    if job.state != lc.JobState.RUNNING:
        return lc.Wait()
    verdict = lc.publish_verdict(
        round_number=rnd.number,
        rounds_total=job.rounds_total,
        due=publish_deadline(job, rnd),
        now=now,
    )
    match verdict:
        case lc.Wait():
            return verdict
        case lc.Complete():
            job.state = lc.JobState.COMPLETED
            log.info("job %s completed at its publication deadline", job.id)
        case lc.FailByBuyer(reason):
            job.state = lc.JobState.FAILED
            deadline_s = int(job.spec.get("publish_deadline_s", 86400))
            job.failure_reason = f"{reason} (within {deadline_s} s of round {rnd.number} closing)"
            log.warning("job %s: %s", job.id, job.failure_reason)
    job.updated_at = now
    session.add(job)
    withdraw_pending_offers(session, job, now=now)
    settlement.on_job_ended(session, job, now=now)
    return verdict


def publish_model(
    session: Session, blobs: BlobStore, job: Job, number: int, upload: TempBlob, *, now: datetime
) -> Round:
    """The buyer's global model for round `number` (> 1): publishes the previous round and
    opens round `number`, in one transaction."""
    assert job.param_count is not None
    weights.check_layout(upload.path, job.layout, job.param_count)
    with locked_job(session, job.id) as job, unit_of_work(session):
        if job.state != JobState.RUNNING:
            raise InvalidStateError(f"job is {job.state}, not running")
        if number != job.current_round + 1 or number > job.rounds_total:
            raise InvalidStateError(
                f"the next model is for round {job.current_round + 1} of {job.rounds_total}"
            )
        prev = locked_round(session, job, job.current_round)
        check_round(session, job, prev, now=now)
        if prev.state != RoundState.CLOSED:
            raise InvalidStateError(f"round {prev.number} is {prev.state}, not closed")
        key = blobkeys.round_model(job.id, number)
        blobs.put_temp(key, upload)
        prev.state = RoundState.PUBLISHED
        session.add(prev)
        job.current_round = number
        job.updated_at = now
        return open_round(session, job, number, key, now=now)
