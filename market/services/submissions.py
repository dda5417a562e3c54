"""Encrypted submissions: the server adds envelopes it can never decrypt.

Order of work for one upload, so that a refusal changes nothing and a crash loses nothing:

1. `precheck`: the provider is expected in a collecting round and has not submitted yet
   (a second upload gets 409 with the first receipt, before any byte is read);
2. the route streams the body into a temp blob with a hard limit (`upload_limit`) → 413;
3. `submit` validates the envelope against the job's stored public context and the exact
   binding (job, round, provider, param_count, summands) → 422 on any mismatch; then, under
   the job's lock (a process lock plus `SELECT ... FOR UPDATE`, so server processes take
   turns; see `market.services.locks`), it re-checks, adds the update to the round's
   accumulator loaded from its blob, writes the new accumulator under a new versioned key,
   and only then commits the rows that point at it, with the accumulator's provider list.
   Old accumulator blobs are never overwritten; once the new one is committed the previous
   one and the envelope are deleted (the sum is all a crash recovery needs).

Memory stays O(model) under any number of concurrent uploads: bodies stream to temp files,
and `submit` runs on its own small thread limiter (`validation_limiter`, `VALIDATION_SLOTS`
threads), since each envelope being parsed costs a few times its size. Uploads waiting for a
slot hold neither memory, an API thread, nor a database connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from datetime import datetime

import anyio
from sqlmodel import Session, select

from crypto import (
    Accumulator,
    CryptoError,
    EnvelopeBinding,
    PublicContext,
    ValidatedEnvelope,
    envelope_size,
    get_preset,
    validate_envelope,
)
from market import translog
from market.blobs import BlobStore, TempBlob
from market.db import PerLoop
from market.errors import (
    DuplicateSubmissionError,
    InvalidStateError,
    PermissionDeniedError,
    RoundClosedError,
)
from market.models import Account, Job, Round, Submission, SubmissionReceipt
from market.models.types import new_id
from market.services import access, groups, reputation, trust
from market.services.locks import locked_job, locked_round
from market.services.rounds import check_round, load_round

log = logging.getLogger(__name__)

_cache_guard = threading.Lock()
# round id -> (acc_key, accumulator): the last committed sum of each collecting round, so a
# submission does not parse the whole persisted sum again. Taken out under the job's lock,
# used only if the database still points at that very sum (another process may have added).
_accumulators: dict[str, tuple[str, Accumulator]] = {}
_ACC_CACHE = 16
_contexts: OrderedDict[str, PublicContext] = OrderedDict()
_CONTEXT_CACHE = 16

# Envelopes validated and added at the same time, per event loop (one per server process).
# Two: one thread adds under the round lock while the next envelope is parsed.
VALIDATION_SLOTS = 2
_limiters = PerLoop(lambda: anyio.CapacityLimiter(VALIDATION_SLOTS))


def validation_limiter() -> anyio.CapacityLimiter:
    """The threads `submit` runs on, `VALIDATION_SLOTS` of them (call from the event loop)."""
    return _limiters.get()


def job_context(blobs: BlobStore, job: Job) -> PublicContext:
    """The job's public context, parsed once per process (keyed by its fingerprint)."""
    assert job.context_key is not None and job.fingerprint is not None
    with _cache_guard:
        ctx = _contexts.get(job.fingerprint)
        if ctx is not None:
            _contexts.move_to_end(job.fingerprint)
            return ctx.for_preset(job.preset_id)
    ctx = PublicContext.from_bytes(blobs.get_bytes(job.context_key))
    with _cache_guard:
        _contexts[job.fingerprint] = ctx
        while len(_contexts) > _CONTEXT_CACHE:
            _contexts.popitem(last=False)
    return ctx.for_preset(job.preset_id)


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


def _refuse_if_not_open(session: Session, job: Job, rnd: Round, provider: Account) -> None:
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
    if rnd.state != "collecting":
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
    if job.state != "running":
        raise InvalidStateError(f"job is {job.state}, not running")
    rnd = load_round(session, job, number)
    _refuse_if_not_open(session, job, rnd, provider)
    return job, upload_limit(job)


def _discard(blobs: BlobStore, key: str) -> None:
    try:
        blobs.delete(key)
    except OSError:
        log.warning("could not delete the superseded sum %s", key, exc_info=True)


def _added(
    blobs: BlobStore,
    ctx: PublicContext,
    job: Job,
    number: int,
    cache_id: str,
    current_key: str | None,
    update: ValidatedEnvelope,
) -> Accumulator:
    """The committed sum at `current_key` (a round's, or one group's) plus `update`."""
    assert job.param_count is not None
    with _cache_guard:
        cached = _accumulators.pop(cache_id, None)
    if cached is not None and cached[0] == current_key:
        acc = cached[1]  # the persisted sum, already parsed: skip re-reading 10 MB
    elif current_key is None:
        acc = Accumulator.empty(
            ctx, job_id=job.id, round=number, param_count=job.param_count,
            summands=job.max_providers,
        )  # fmt: skip
    else:
        acc = Accumulator.from_bytes(blobs.get_bytes(current_key), ctx)
    acc.add(update)
    return acc


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

    A provider that registered an identity key must sign the envelope's header hash
    (`signature`); the server checks it and logs it inside its signed `accepted` record."""
    assert job.param_count is not None
    ctx = job_context(blobs, job)
    data = upload.read_bytes()
    binding = EnvelopeBinding(job.id, number, provider.id, job.param_count, job.max_providers)
    try:
        validated = validate_envelope(data, ctx, binding, max_bytes=upload.limit)
    except CryptoError as exc:
        # The refusal changes nothing in the round; it is noted in the sender's reputation.
        reputation.record_invalid(session, job.id, number, provider.id, data, exc, now=now)
        raise
    header_sha256 = hashlib.sha256(data[: validated.header.header_len]).hexdigest()
    signed = trust.verify_envelope_signature(
        session, provider, header_sha256, signature, required=False
    )
    with locked_job(session, job.id) as fresh_job:
        rnd = locked_round(session, fresh_job, number)
        # A deadline that passed before this update arrived is applied first; the decision
        # stands whatever becomes of this upload (which is then refused).
        before = (rnd.state, rnd.attempt)
        check_round(session, fresh_job, rnd, now=now)
        if (rnd.state, rnd.attempt) != before:
            session.commit()
        _refuse_if_not_open(session, fresh_job, rnd, provider)
        sub_id = new_id("sub")
        base = f"jobs/{job.id}/rounds/{number:04d}"
        acc = _added(blobs, ctx, job, number, rnd.id, rnd.acc_key, validated)
        acc_key = f"{base}/acc-{acc.count:04d}-{sub_id}.bin"
        acc_bytes = acc.to_bytes()
        blobs.put_bytes(acc_key, acc_bytes)
        # The same update goes into its random group's sum (contribution is measured on
        # group sums: market.services.groups).
        group = groups.group_for(session, rnd, provider.id)
        group_acc = _added(blobs, ctx, job, number, group.id, group.acc_key, validated)
        group_key = f"{base}/group-{group.index:03d}-{group_acc.count:04d}-{sub_id}.bin"
        blobs.put_bytes(group_key, group_acc.to_bytes())
        offer = access.offer_of(session, job.id, provider.id)
        # A claim never exceeds what was matched: the listing's count when offered.
        samples = validated.header.samples
        if offer is not None:
            samples = min(samples, offer.samples)
        sub = Submission(
            id=sub_id,
            job_id=job.id,
            round_id=rnd.id,
            round_number=number,
            attempt=rnd.attempt,
            provider_id=provider.id,
            payload_sha256=validated.header.payload_sha256,
            envelope_key=None,
            size_bytes=upload.size,
            samples=samples,
            weight=validated.header.weight,
            accepted_at=now,
        )
        superseded = [k for k in (rnd.acc_key, group.acc_key) if k is not None]
        rnd.acc_key = acc_key
        rnd.acc_count = acc.count
        # Who is inside the sum, copied from the sum itself: what settlement pays.
        rnd.acc_providers = list(acc.provider_ids)
        rnd.acc_sha256 = hashlib.sha256(acc_bytes).hexdigest()
        group.acc_key, group.acc_count = group_key, group_acc.count
        group.acc_providers = list(group_acc.provider_ids)
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
        session.commit()
    # The database now points at the new sum; the previous one is garbage. The envelope was
    # never stored: it lives on only inside the sum (the route deletes the upload). A crash
    # before this line leaves an orphan file, never a dangling pointer.
    for key in superseded:
        _discard(blobs, key)
    # Only a committed sum goes back in the cache; any failure above leaves it out, so the
    # next submission re-reads the persisted blob the database points to.
    with _cache_guard:
        _accumulators[rnd.id] = (acc_key, acc)
        _accumulators[group.id] = (group_key, group_acc)
        while len(_accumulators) > _ACC_CACHE:
            _accumulators.pop(next(iter(_accumulators)))
    log.info("job %s round %d: update %d from %s", job.id, number, acc.count, provider.id)
    out = receipt(sub)
    out.record, out.leaf_index = record, leaf.index
    return out
