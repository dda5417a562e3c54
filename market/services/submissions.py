"""Encrypted submissions: the server adds envelopes it can never decrypt.

Order of work for one upload, so that a refusal changes nothing and a crash loses nothing:

1. `precheck`: the provider is expected in a collecting round and has not submitted yet
   (a second upload gets 409 with the first receipt, before any byte is read);
2. the route streams the body into a temp blob with a hard limit (`upload_limit`) → 413;
3. `submit` validates the envelope against the job's stored public context and the exact
   binding (job, round, provider, param_count, summands) → 422 on any mismatch, with no lock
   held; stores the envelope as a blob (the upload is renamed, fsynced); then, under a short
   lock on the job and its round (`market.services.locks`) it re-checks, inserts the
   `Submission` row pointing at the envelope, counts the update, logs the signed `accepted`
   record and commits: from then on the acceptance is durable. A refusal deletes the blob.
4. after the commit, outside every database lock, the update goes into this process's own
   partial sum of the round (`market.services.partials`), checkpointed every few updates or
   seconds; the round's close merges the checkpoints and replays the envelopes none of them
   covers, so processes add in parallel and a crash at any point loses nothing.

Memory stays O(model) under any number of concurrent uploads: bodies stream to temp files,
each is checked and added from its file a piece of a few MB at a time (crypto/streaming.py),
and `submit` runs on its own small thread limiter (`validation_limiter`, `VALIDATION_SLOTS`
threads). Uploads waiting for a slot hold neither memory, an API thread, nor a database
connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import BinaryIO

import anyio
from sqlalchemy import Engine
from sqlmodel import Session, select

from crypto import (
    CheckedEnvelope,
    CryptoError,
    EnvelopeBinding,
    EnvelopeHeader,
    PublicContext,
    check_envelope_file,
    envelope_size,
    get_preset,
)
from market import blobkeys, translog
from market.blobs import BlobStore, TempBlob
from market.db import PerLoop, unit_of_work
from market.errors import (
    DuplicateSubmissionError,
    InvalidStateError,
    PermissionDeniedError,
    RoundClosedError,
)
from market.lifecycle import JobState, RoundState
from market.models import (
    Account,
    Job,
    LogLeaf,
    Round,
    RoundGroup,
    Submission,
    SubmissionReceipt,
)
from market.models.types import new_id
from market.services import access, groups, partials, reputation, trust
from market.services.contexts import job_context
from market.services.locks import locked_job, locked_round
from market.services.rounds import check_round, find_round, load_round

__all__ = ["job_context", "precheck", "receipt", "submit", "upload_limit", "validation_limiter"]

log = logging.getLogger(__name__)

# Envelopes validated at the same time, per event loop (one per server process): each holds a
# piece of its payload and a thread.
VALIDATION_SLOTS = 2
_limiters = PerLoop(lambda: anyio.CapacityLimiter(VALIDATION_SLOTS))


def validation_limiter() -> anyio.CapacityLimiter:
    """The threads `submit` runs on, `VALIDATION_SLOTS` of them (call from the event loop)."""
    return _limiters.get()


def receipt(sub: Submission, session: Session | None = None) -> SubmissionReceipt:
    out = SubmissionReceipt(
        submission_id=sub.id,
        job_id=sub.job_id,
        round=sub.round_number,
        attempt=sub.attempt,
        payload_sha256=sub.payload_sha256,
        accepted_at=sub.accepted_at,
    )
    if session is not None:
        # The signed record of this acceptance, if the log holds one (older rows have none).
        for leaf in translog.leaves_of(
            session, job_id=sub.job_id, kind="accepted", account_id=sub.provider_id
        ):
            if leaf.round == sub.round_number:
                record = json.loads(leaf.payload)
                if record["body"]["payload_sha256"] == sub.payload_sha256:
                    out.record, out.leaf_index = record, leaf.index
    return out


def upload_limit(job: Job) -> int:
    assert job.param_count is not None
    return envelope_size(get_preset(job.preset_id), job.param_count)


def _refuse_duplicate(session: Session, rnd: Round, provider: Account) -> None:
    """409 with the first receipt if the provider already has an update in the round."""
    existing = session.exec(
        select(Submission).where(
            Submission.round_id == rnd.id, Submission.provider_id == provider.id
        )
    ).first()
    if existing is not None:
        first = receipt(existing, session)
        raise DuplicateSubmissionError(
            f"provider {provider.id} already submitted to round {rnd.number}",
            first=first.model_dump(mode="json"),
        )


def _refuse_if_not_open(session: Session, job: Job, rnd: Round, provider: Account) -> None:
    _refuse_duplicate(session, rnd, provider)
    _refuse_if_closed(rnd, provider)


def _refuse_if_closed(rnd: Round, provider: Account) -> None:
    if rnd.state != RoundState.COLLECTING:
        raise RoundClosedError(f"round {rnd.number} is {rnd.state}")
    if provider.id not in rnd.expected:
        raise PermissionDeniedError(f"provider {provider.id} is not expected in round {rnd.number}")


def precheck(
    session: Session, job_id: str, number: int, provider: Account, *, now: datetime
) -> tuple[Job, int]:
    """Refuse early what can be refused without reading the body; returns the size limit."""
    if provider.role != "provider":
        raise PermissionDeniedError("only providers submit updates")
    job = access.participant_job(session, job_id, provider)
    # First: an envelope resent because its answer was lost gets its receipt, even once
    # its round (the job's last) closed and the job ended with it.
    rnd = find_round(session, job.id, number)
    if rnd is not None:
        _refuse_duplicate(session, rnd, provider)
    if job.state != JobState.RUNNING:
        raise InvalidStateError(f"job is {job.state}, not running")
    _refuse_if_closed(load_round(session, job, number) if rnd is None else rnd, provider)
    return job, upload_limit(job)


def _discard(blobs: BlobStore, key: str) -> None:
    try:
        blobs.delete(key)
    except OSError:
        log.warning("could not delete the refused envelope %s", key, exc_info=True)


def submit(
    session: Session,
    blobs: BlobStore,
    job: Job,
    number: int,
    provider: Account,
    upload: TempBlob,
    *,
    now: datetime,
    signature: str | None = None,
) -> SubmissionReceipt:
    """Validate an uploaded envelope and add it to the round's encrypted sum.

    A provider that registered an identity key, and every provider of a job its buyer
    signed, must sign the envelope's header hash (`signature`); the server checks it and
    logs it inside its signed `accepted` record."""
    assert job.param_count is not None
    ctx = job_context(blobs, job)
    binding = EnvelopeBinding(job.id, number, provider.id, job.param_count, job.max_providers)
    # Open until the update is in this process's partial sum: it is read a piece at a time,
    # and stays readable once the upload is moved into the blob store.
    with upload.path.open("rb") as handle:
        checked, signed = _check(session, ctx, job, provider, upload, handle, binding,
                                 signature, now=now)  # fmt: skip
        sub_id = new_id("sub")
        # Durable before the row that points at it; the round's close replays it from here.
        envelope_key = blobkeys.envelope(job.id, number, sub_id)
        blobs.put_temp(envelope_key, upload)
        try:
            sub, rnd, group, record, leaf = _accept(
                session, job, number, provider, checked.header, sub_id, envelope_key,
                upload.size, signed, now=now,
            )  # fmt: skip
        except BaseException:
            session.rollback()
            _discard(blobs, envelope_key)
            raise
        if rnd.state == RoundState.COLLECTING:
            _sum_accepted(session.get_bind(), ctx, job, rnd, group, checked)  # type: ignore[arg-type]
    log.info("job %s round %d: update %d from %s", job.id, number, rnd.acc_count, provider.id)
    out = receipt(sub)
    out.record, out.leaf_index = record, leaf.index
    return out


def _check(
    session: Session,
    ctx: PublicContext,
    job: Job,
    provider: Account,
    upload: TempBlob,
    handle: BinaryIO,
    binding: EnvelopeBinding,
    signature: str | None,
    *,
    now: datetime,
) -> tuple[CheckedEnvelope, trust.Record | None]:
    """Every check of the uploaded envelope in `handle` and of its header's signature."""
    try:
        checked = check_envelope_file(handle, ctx, binding, max_bytes=upload.limit)
    except CryptoError as exc:
        # The refusal changes nothing in the round; it is noted in the sender's reputation.
        reputation.record_invalid(
            session, job.id, binding.round, provider.id, upload.sha256, exc, now=now
        )
        raise
    handle.seek(0)
    header_sha256 = hashlib.sha256(handle.read(checked.header.header_len)).hexdigest()
    signed = trust.verify_envelope_signature(
        session, provider, header_sha256, signature,
        required=trust.job_is_signed(session, job.id),
    )  # fmt: skip
    return checked, signed


def _sum_accepted(
    engine: Engine, ctx: PublicContext, job: Job, rnd: Round, group: RoundGroup,
    checked: CheckedEnvelope,
) -> None:  # fmt: skip
    """After the acceptance committed, outside every database lock: the update into this
    process's own partial sum of the round, and its group's sum built if it completed it
    (this update from the file it was just checked in, not read back from the store). A
    failure loses nothing: the close replays or builds what is missing."""
    try:
        partials.add(engine, ctx, job, rnd, checked)
    except Exception:
        log.exception("an update of %s is not in this partial; the close replays it", rnd.id)
    if group.acc_count >= len(group.members):
        try:
            partials.build_group(engine, ctx, job, rnd.number, group.index, last=checked)
        except Exception:
            log.exception("group %d of round %s not built; the close builds it",
                          group.index, rnd.id)  # fmt: skip


def _submission(
    session: Session, job: Job, rnd: Round, provider: Account, header: EnvelopeHeader,
    sub_id: str, envelope_key: str, size: int, *, now: datetime,
) -> Submission:  # fmt: skip
    """The accepted update's row; its sample claim never exceeds what was matched (the
    listing's count when offered)."""
    offer = access.offer_of(session, job.id, provider.id)
    samples = header.samples if offer is None else min(header.samples, offer.samples)
    return Submission(
        id=sub_id,
        job_id=job.id,
        round_id=rnd.id,
        round_number=rnd.number,
        attempt=rnd.attempt,
        provider_id=provider.id,
        payload_sha256=header.payload_sha256,
        envelope_key=envelope_key,
        size_bytes=size,
        samples=samples,
        weight=header.weight,
        accepted_at=now,
    )


def _accept(
    session: Session,
    job: Job,
    number: int,
    provider: Account,
    header: EnvelopeHeader,
    sub_id: str,
    envelope_key: str,
    size: int,
    signed: trust.Record | None,
    *,
    now: datetime,
) -> tuple[Submission, Round, RoundGroup, trust.Record, LogLeaf]:
    """Record the acceptance: a short lock on the job and its round to check it collects,
    count the update, log the signed `accepted` record, and close the round when it was the
    last one expected (one unit of work). No ciphertext is touched here unless the round
    closes."""
    with locked_job(session, job.id) as fresh_job, unit_of_work(session):
        rnd = locked_round(session, fresh_job, number)
        # A deadline that passed before this update arrived is applied first; the decision
        # stands whatever becomes of this upload (which is then refused).
        before = (rnd.state, rnd.attempt)
        check_round(session, fresh_job, rnd, now=now)
        if (rnd.state, rnd.attempt) != before:
            session.commit()  # the deadline's verdict stands even if this upload is refused
        _refuse_if_not_open(session, fresh_job, rnd, provider)
        # Its random group (contribution is measured on group sums: market.services.groups).
        group = groups.group_for(session, rnd, provider.id)
        sub = _submission(session, job, rnd, provider, header, sub_id, envelope_key, size,
                          now=now)  # fmt: skip
        # Counted as accepted; once the round closes these become what its sums hold.
        rnd.acc_count += 1
        group.acc_count += 1
        group.acc_providers = [*group.acc_providers, provider.id]
        session.add(sub)
        session.add(rnd)
        session.add(group)
        session.flush()
        record, leaf = trust.log_accepted(
            session,
            translog.current(),
            job_id=job.id,
            round=number,
            attempt=rnd.attempt,
            provider_id=provider.id,
            payload_sha256=sub.payload_sha256,
            envelope=signed,
            accepted_at=sub.accepted_at.isoformat(),
            now=now,
        )
        # The last expected update closes the round in the same transaction.
        check_round(session, fresh_job, rnd, now=now)
    return sub, rnd, group, record, leaf
