"""Serialize the decisions that change one job: accepting, declining, withdrawing offers.

Two providers accepting at the same instant each read the job as `open`, and both would start
it (a second round 1: a UNIQUE violation, an HTTP 500), or both append themselves to the
collecting round's `expected` list and one append would be lost. `locked_job` takes a
per-job lock in this process and, on PostgreSQL, the job row's `FOR UPDATE` lock, so API
workers in several processes wait for each other too; then it re-reads the job so the
caller decides on the latest state. The row lock lasts until the caller's next commit, so
callers make the whole decision in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlmodel import Session, select

from market.errors import NotFoundError
from market.models import Job

_guard = threading.Lock()
_job_locks: dict[str, threading.Lock] = {}


def _lock_for(job_id: str) -> threading.Lock:
    with _guard:
        return _job_locks.setdefault(job_id, threading.Lock())


@contextmanager
def locked_job(session: Session, job_id: str) -> Iterator[Job]:
    """The job, freshly read, with no other decision on it running until the block ends."""
    with _lock_for(job_id):
        # End the current read transaction: what follows must see rows committed meanwhile.
        session.commit()
        session.expire_all()
        stmt = select(Job).where(Job.id == job_id).with_for_update()
        job = session.exec(stmt).first()
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        yield job
