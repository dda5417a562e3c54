"""Serialize the decisions that change one job: offers, submissions, round closes.

Two providers accepting at the same instant each read the job as `open`, and both would start
it (a second round 1: a UNIQUE violation, an HTTP 500); two server processes adding an
update each onto the same running sum would lose one of them; two deadline passes closing
the same round would settle it twice. Every such decision runs inside `locked_job`: a per-job
lock in this process and, on PostgreSQL, the job row's `SELECT ... FOR UPDATE`, so workers in
several processes wait for each other too (SQLite serves a single process, see `market.db`).

Lock order is always job, then its round (`locked_round`), then the ledger's chain lock.

Each locked read refreshes the objects it returns (`populate_existing`): the ORM's identity
map would otherwise keep the attributes it loaded before the lock was granted, and the caller
would decide on a stale row although the database handed it the fresh one. The row lock lasts
until the caller's next commit, so callers make the whole decision in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlmodel import Session, select

from market.errors import NotFoundError
from market.models import Job, Round

_guard = threading.Lock()
_job_locks: dict[str, threading.Lock] = {}


def _lock_for(job_id: str) -> threading.Lock:
    with _guard:
        return _job_locks.setdefault(job_id, threading.Lock())


def _fresh_job(session: Session, job_id: str, *, skip_locked: bool) -> Job | None:
    stmt = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return session.exec(stmt).first()


@contextmanager
def locked_job(session: Session, job_id: str) -> Iterator[Job]:
    """The job, freshly read, with no other decision on it running until the block ends."""
    with _lock_for(job_id):
        # End the current read transaction: what follows must see rows committed meanwhile.
        session.commit()
        session.expire_all()
        job = _fresh_job(session, job_id, skip_locked=False)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        yield job


@contextmanager
def job_unless_busy(session: Session, job_id: str) -> Iterator[Job | None]:
    """Like `locked_job`, but None at once when another thread or process holds the job:
    background passes skip what someone else is deciding instead of queueing behind it."""
    lock = _lock_for(job_id)
    if not lock.acquire(blocking=False):
        yield None
        return
    try:
        session.commit()
        session.expire_all()
        yield _fresh_job(session, job_id, skip_locked=True)
    finally:
        lock.release()


def locked_round(session: Session, job: Job, number: int) -> Round:
    """Round `number` of a job the caller holds with `locked_job`, freshly read and locked."""
    stmt = (
        select(Round)
        .where(Round.job_id == job.id, Round.number == number)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rnd = session.exec(stmt).first()
    if rnd is None:
        raise NotFoundError(f"job {job.id} has no round {number}")
    return rnd
