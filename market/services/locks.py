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
until the caller's next commit, so callers make the whole decision in one transaction, opened
inside the lock and committed before it is released:
`with locked_job(session, job_id) as job, unit_of_work(session): ...` (`market.db`). Taking
the lock inside an open unit of work is refused: its first commit would cut that unit in two,
and the unit's own commit would come after the lock is released.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from market.db import in_unit_of_work
from market.errors import NotFoundError
from market.models import Job, Round

_guard = threading.Lock()
_job_locks: dict[str, threading.Lock] = {}


def _lock_for(job_id: str) -> threading.Lock:
    with _guard:
        return _job_locks.setdefault(job_id, threading.Lock())


def _outside_unit_of_work(session: Session) -> None:
    if in_unit_of_work(session):
        raise RuntimeError("take a job's lock before opening the unit of work, not inside it")


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
    _outside_unit_of_work(session)
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
    _outside_unit_of_work(session)
    lock = _lock_for(job_id)
    if not lock.acquire(blocking=False):
        yield None
        return
    try:
        # End the current read transaction, as `locked_job` does.
        session.commit()
        session.expire_all()
        yield _fresh_job(session, job_id, skip_locked=True)
    finally:
        lock.release()


@contextmanager
def job_within(session: Session, job_id: str, wait_s: float) -> Iterator[Job | None]:
    """Like `locked_job`, but None when the job is still held by someone else after `wait_s`
    seconds: work that may be dropped safely (a checkpoint, whose updates the close replays)
    does not queue behind a long decision such as a round's close, and the upload that
    triggered it is answered without waiting for that close to end."""
    _outside_unit_of_work(session)
    lock = _lock_for(job_id)
    if not lock.acquire(timeout=wait_s):
        yield None
        return
    try:
        # End the current read transaction, as `locked_job` does.
        session.commit()
        session.expire_all()
        yield _fresh_job_within(session, job_id, wait_s)
    finally:
        lock.release()


_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when `lock_timeout` ran out


def _fresh_job_within(session: Session, job_id: str, wait_s: float) -> Job | None:
    if session.get_bind().dialect.name != "postgresql":
        return _fresh_job(session, job_id, skip_locked=False)  # one process: the lock above
    session.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(wait_s * 1000))}ms'"))
    try:
        job = _fresh_job(session, job_id, skip_locked=False)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        session.rollback()
        return None
    # Only this wait is bounded: the rest of the transaction waits as any other does.
    session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
    return job


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
