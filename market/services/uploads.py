"""One envelope upload in flight per provider per round, in all server processes together.

The submission route claims the (job, round, provider) slot with a row in `upload_claim`
before it reads a byte of the body, and releases it when the upload ends, however it ends. A
second upload for the same slot meanwhile is refused with 409 at once, instead of being
received, parsed and validated only to lose to the first (100 parallel uploads for one slot
were all read before 99 of them got 409).

The claim carries a heartbeat, renewed while the body arrives. A claim whose heartbeat is
older than the upload idle timeout belongs to a process that died mid-upload (a live upload
that sends nothing for that long is dropped with 408 anyway) and is taken over. The claim
only saves the server's work: that a provider is in a round's sum at most once is still
decided in `submissions.submit`'s locked section.
"""

from __future__ import annotations

import logging
import math
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from market.db import unit_of_work
from market.errors import UploadInProgressError
from market.models import UploadClaim

log = logging.getLogger(__name__)


def _slot(job_id: str, number: int, provider_id: str) -> list[Any]:
    return [
        col(UploadClaim.job_id) == job_id,
        col(UploadClaim.round_number) == number,
        col(UploadClaim.provider_id) == provider_id,
    ]


def claim(
    session: Session,
    *,
    job_id: str,
    number: int,
    provider_id: str,
    now: datetime,
    stale_after_s: float,
) -> str:
    """Take the slot for this upload (committed); returns the token that releases it.

    Refused with `UploadInProgressError` while another upload holds a live claim on it.
    """
    token = secrets.token_hex(16)
    try:
        with unit_of_work(session):
            session.execute(
                insert(UploadClaim).values(
                    job_id=job_id, round_number=number, provider_id=provider_id,
                    token=token, heartbeat_at=now,
                )
            )  # fmt: skip
        return token
    except IntegrityError:
        pass  # the slot is claimed (the unit of work rolled back): taken over if stale
    cutoff = now - timedelta(seconds=stale_after_s)
    with unit_of_work(session):
        result: Any = session.execute(
            update(UploadClaim)
            .where(*_slot(job_id, number, provider_id), col(UploadClaim.heartbeat_at) < cutoff)
            .values(token=token, heartbeat_at=now)
        )
    if result.rowcount == 1:
        log.info(
            "took over a stale upload claim on %s round %d for %s", job_id, number, provider_id
        )
        return token
    slot = _slot(job_id, number, provider_id)
    beat = session.exec(select(UploadClaim.heartbeat_at).where(*slot)).first()
    wait = (beat - cutoff).total_seconds() if beat is not None else 1.0
    raise UploadInProgressError(
        f"an upload of this provider for round {number} is already under way; "
        "try again once it has ended (if it lands, the next try is answered as a duplicate)",
        retry_after=max(1, math.ceil(wait)),
        round=number,
    )


def heartbeat(
    session: Session, *, job_id: str, number: int, provider_id: str, token: str, now: datetime
) -> None:
    """The upload holding `token` is alive at `now` (committed)."""
    with unit_of_work(session):
        session.execute(
            update(UploadClaim)
            .where(*_slot(job_id, number, provider_id), col(UploadClaim.token) == token)
            .values(heartbeat_at=now)
        )


def release(session: Session, *, job_id: str, number: int, provider_id: str, token: str) -> None:
    """Give the slot back (committed); a claim taken over meanwhile is left alone."""
    with unit_of_work(session):
        session.execute(
            delete(UploadClaim).where(
                *_slot(job_id, number, provider_id), col(UploadClaim.token) == token
            )
        )
