"""Partial sums per server process, their checkpoints, and the merge that closes a round.

Addition is associative, so server processes need not take turns on one running sum. An
accepted update is durable once its envelope blob and its `Submission` row are committed
(`market.services.submissions`); after that commit, outside any database lock, the process
adds it into a partial sum of its own in memory, one per collecting round (`add`). Every
`checkpoint_updates` updates or `checkpoint_seconds` seconds (settings; `flush_due` runs on
every deadline pass) the partial is written as a blob and recorded as a `RoundPartial` row
naming the providers it holds, under a short lock on the round that refuses a round no
longer collecting.

Each random group's sum (`market.services.groups`) is built once all its members are in,
by the process that accepted the last of them (`build_group`): from the members' envelopes,
one at a time, recorded as a `RoundPartial` with the group's index. No process keeps a sum
per group in memory, so hundreds of groups cost one model at a time, not one each. An
envelope is deleted as soon as a recorded part of the total and a recorded part of its
group both hold it (`_release`, after that commit); until then it is what recovery needs.

Closing a round merges the recorded parts and replays the envelopes none of them covers
(`market.services.merging`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from crypto import (
    Accumulator,
    CheckedEnvelope,
    CryptoError,
    EnvelopeBinding,
    PublicContext,
    StreamedEnvelope,
    check_envelope_file,
    stream_envelope,
)
from market import blobkeys
from market.blobs import BlobStore
from market.db import unit_of_work
from market.lifecycle import RoundState
from market.models import Job, Round, RoundPartial, Submission
from market.models.types import new_id
from market.services import groups
from market.services.locks import job_within, locked_round

log = logging.getLogger(__name__)

_DELETE_AFTER_COMMIT = "pollen.delete_after_commit"
RECORD_WAIT_S = 1.0  # acceptances hold the job for ms, a close for s (6 at 1,000 providers)


@dataclass
class _Policy:
    blobs: BlobStore | None = None
    every_updates: int = 16
    every_seconds: float = 5.0


_policy = _Policy()


def install(blobs: BlobStore, *, every_updates: int = 16, every_seconds: float = 5.0) -> None:
    """The process's blob store and checkpoint policy (`create_app` calls this)."""
    _policy.blobs, _policy.every_updates, _policy.every_seconds = (
        blobs,
        every_updates,
        every_seconds,
    )


def store() -> BlobStore:
    if _policy.blobs is None:
        raise RuntimeError("no blob store installed for partial sums (create_app installs it)")
    return _policy.blobs


def empty_sum(ctx: PublicContext, job: Job, number: int) -> Accumulator:
    assert job.param_count is not None
    return Accumulator.empty(
        ctx, job_id=job.id, round=number, param_count=job.param_count, summands=job.max_providers
    )


# --- this process's partial sums ----------------------------------------------------------


@dataclass
class _Partial:
    job_id: str
    number: int
    acc: Accumulator
    started: float = field(default_factory=time.monotonic)
    # Set once a checkpoint took this sum: later additions go into a new partial.
    sealed: bool = False
    # Serializes the additions into this one sum (threads of one process); nothing else.
    lock: threading.Lock = field(default_factory=threading.Lock)


_guard = threading.Lock()
_partials: dict[str, _Partial] = {}


def add(engine: Engine, ctx: PublicContext, job: Job, rnd: Round, update: CheckedEnvelope) -> None:
    """Add a committed update into this process's partial sum of its round; checkpoint it
    when due. A failure here loses nothing: the envelope is replayed at close (a partial
    left void by an update that failed half-way in is dropped, its updates with it)."""
    while True:
        with _guard:
            part = _partials.get(rnd.id)
            if part is None:
                part = _Partial(job.id, rnd.number, empty_sum(ctx, job, rnd.number))
                _partials[rnd.id] = part
        with part.lock:
            if part.sealed:
                continue  # a checkpoint took it meanwhile
            try:
                part.acc.add(update)
            finally:
                if part.acc.void is not None:
                    part.sealed = True
                    with _guard:
                        if _partials.get(rnd.id) is part:
                            del _partials[rnd.id]
            due = part.acc.count >= _policy.every_updates
            break
    if due:
        checkpoint(engine, rnd.id)


def flush_due(engine: Engine, *, everything: bool = False) -> int:
    """Checkpoint every partial older than `checkpoint_seconds` (all of them with
    `everything`, e.g. at shutdown); returns how many were written."""
    now = time.monotonic()
    with _guard:
        due = [
            rid
            for rid, p in _partials.items()
            if everything or now - p.started >= _policy.every_seconds
        ]
    return sum(checkpoint(engine, rid) for rid in due)


def held() -> dict[str, int]:
    """Round id → updates in this process's uncheckpointed partial (for tests and stats)."""
    with _guard:
        return {rid: p.acc.count for rid, p in _partials.items()}


def checkpoint(engine: Engine, round_id: str) -> bool:
    """Write this process's partial of `round_id` and record it; False if there was none
    or the round no longer collects (its close replays those updates from the envelopes)."""
    acc = take(round_id)
    if acc is None or not _record(engine, acc, blobkeys.partial(acc.job_id, acc.round), None):
        return False
    log.info("round %s: checkpoint of %d updates", round_id, acc.count)
    return True


def build_group(
    engine: Engine,
    ctx: PublicContext,
    job: Job,
    number: int,
    index: int,
    last: CheckedEnvelope | None = None,
) -> bool:
    """Every member of group `index` is in: write the sum of the members no earlier part of
    the group holds, from their envelopes (one at a time; `last`, the update just accepted,
    from the file it was checked in), and record it; False if there was nothing to build or
    the round no longer collects. A failure loses nothing: the close builds what is missing
    from the envelopes."""
    with Session(engine) as session:
        rnd = session.exec(
            select(Round).where(Round.job_id == job.id, Round.number == number)
        ).one()
        members = next(g.members for g in groups.groups_of(session, rnd) if g.index == index)
        held = _covered(session, rnd.id, index)
        subs = [
            s
            for s in session.exec(select(Submission).where(Submission.round_id == rnd.id))
            if s.provider_id in members and s.provider_id not in held
        ]
    if not subs or any(s.envelope_key is None for s in subs):
        return False
    gsum = _sum_of(ctx, job, rnd, subs, last)
    # Named as the group's sum: the close keeps it as that when no other part joins it.
    return gsum is not None and _record(engine, gsum, blobkeys.group_sum(job.id, number, index),
                                        index)  # fmt: skip


def _sum_of(
    ctx: PublicContext, job: Job, rnd: Round, subs: list[Submission], last: CheckedEnvelope | None
) -> Accumulator | None:
    """The sum of these stored updates (`last` from its open file); None if one cannot be
    read back whole."""
    gsum = empty_sum(ctx, job, rnd.number)
    for sub in sorted(subs, key=lambda x: x.provider_id):
        if last is not None and last.header.provider_id == sub.provider_id:
            gsum.add(last)  # checked a moment ago, its pieces compared again as they are read
            continue
        # Read once from the store, checked as it is added: a bad one voids only `gsum`.
        with streamed(ctx, job, rnd, sub) as update:
            if update is None:
                return None
            try:
                gsum.add(update)
            except CryptoError:
                log.exception("round %s: the envelope of %s cannot be replayed", rnd.id, sub.id)
                return None
    return gsum


def _record(engine: Engine, acc: Accumulator, key: str, group_index: int | None) -> bool:
    """Write `acc` at `key` and record it as a part of its round's total (`group_index`
    None) or of one group's sum; False, the blob deleted, if the job stays busy for
    `RECORD_WAIT_S` (a close under way: no answer waits for it), the round no longer collects,
    a recorded part holds one of its updates, or the record failed (none is lost)."""
    blobs = store()
    sha256 = blobs.put_stream(key, acc.chunks())
    try:
        with (
            Session(engine) as session,
            job_within(session, acc.job_id, RECORD_WAIT_S) as job,
            unit_of_work(session),
        ):
            rnd = None if job is None else locked_round(session, job, acc.round)
            held: set[str] = set()
            if rnd is not None and group_index is not None:
                held = _covered(session, rnd.id, group_index)
            if rnd is None or rnd.state != RoundState.COLLECTING or held & set(acc.provider_ids):
                delete_blobs(blobs, [key])
                return False
            session.add(
                RoundPartial(
                    id=new_id("prt"), round_id=rnd.id, group_index=group_index, key=key,
                    count=acc.count, providers=list(acc.provider_ids), sha256=sha256,
                )
            )  # fmt: skip
            session.flush()
            _release(session, rnd)
    except Exception:
        log.exception("part %s of round %d of job %s not recorded", key, acc.round, acc.job_id)
        delete_blobs(blobs, [key])
        return False
    return True


def _covered(session: Session, round_id: str, group_index: int | None) -> set[str]:
    """The providers the recorded parts of the round's total (None) or of one group hold."""
    rows = session.exec(
        select(RoundPartial.providers).where(
            RoundPartial.round_id == round_id,
            RoundPartial.group_index == group_index
            if group_index is not None
            else col(RoundPartial.group_index).is_(None),
        )
    )
    return {p for providers in rows for p in providers}


def _release(session: Session, rnd: Round) -> None:
    """Delete (after commit) the envelopes whose update a recorded part of the total and a
    recorded part of its group both hold: nothing needs them any more."""
    rows = session.exec(select(RoundPartial).where(RoundPartial.round_id == rnd.id)).all()
    in_total = {p for r in rows if r.group_index is None for p in r.providers}
    in_group: dict[int, set[str]] = {}
    for r in rows:
        if r.group_index is not None:
            in_group.setdefault(r.group_index, set()).update(r.providers)
    group_of = {pid: g.index for g in groups.groups_of(session, rnd) for pid in g.members}
    done = []
    for sub in session.exec(
        select(Submission).where(
            Submission.round_id == rnd.id, col(Submission.envelope_key).is_not(None)
        )
    ):
        index = group_of.get(sub.provider_id)
        if (
            sub.provider_id in in_total
            and index is not None
            and sub.provider_id in in_group.get(index, ())
        ):
            done.append(str(sub.envelope_key))
            sub.envelope_key = None
            session.add(sub)
    delete_after_commit(session, done)


# --- blobs deleted after a commit, envelopes replayed ---------------------------------------


def delete_blobs(blobs: BlobStore, keys: Iterable[str]) -> None:
    """Delete `keys` in as few requests as the store allows; log those that remain."""
    for key in blobs.delete_many(keys):
        log.warning("could not delete blob %s", key)


def delete_after_commit(session: Session, keys: Iterable[str]) -> None:
    """Delete these blobs once the session's transaction commits (never on a rollback)."""
    session.info.setdefault(_DELETE_AFTER_COMMIT, []).extend(keys)


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    keys = session.info.pop(_DELETE_AFTER_COMMIT, None)
    if keys and _policy.blobs is not None:
        delete_blobs(_policy.blobs, keys)


@event.listens_for(OrmSession, "after_rollback")
def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_DELETE_AFTER_COMMIT, None)


@contextmanager
def replayed(
    ctx: PublicContext, job: Job, rnd: Round, sub: Submission
) -> Iterator[CheckedEnvelope | None]:
    """The stored envelope of `sub`, checked again against its binding and its hash (None,
    logged, when it cannot be), readable while the `with` block runs."""
    assert job.param_count is not None and sub.envelope_key is not None
    binding = EnvelopeBinding(job.id, rnd.number, sub.provider_id, job.param_count,
                              job.max_providers)  # fmt: skip
    with ExitStack() as stack:
        update: CheckedEnvelope | None
        try:
            handle = stack.enter_context(store().open_file(sub.envelope_key))
            update = check_envelope_file(handle, ctx, binding)
        except (CryptoError, OSError):
            log.exception(
                "round %s: the envelope of %s cannot be replayed", rnd.id, sub.provider_id
            )
            update = None
        if update is not None and update.header.payload_sha256 != sub.payload_sha256:
            log.error("round %s: the envelope of %s does not match its receipt", rnd.id, sub.id)
            update = None
        yield update


@contextmanager
def streamed(
    ctx: PublicContext, job: Job, rnd: Round, sub: Submission
) -> Iterator[StreamedEnvelope | None]:
    """The stored envelope of `sub` as one pass over its blob, its header checked against
    its binding and its receipt (None, logged, when it cannot be); its payload is checked as
    it is added, so only add it into a sum that is thrown away if that fails."""
    assert job.param_count is not None and sub.envelope_key is not None
    binding = EnvelopeBinding(job.id, rnd.number, sub.provider_id, job.param_count,
                              job.max_providers)  # fmt: skip
    try:
        stream = store().open_read(sub.envelope_key)
    except OSError:
        log.exception("round %s: the envelope of %s cannot be read", rnd.id, sub.provider_id)
        stream = None
    try:
        update: StreamedEnvelope | None = None
        if stream is not None:
            try:
                update = stream_envelope(stream, stream.size, ctx, binding)
            except CryptoError:
                log.exception(
                    "round %s: the envelope of %s cannot be replayed", rnd.id, sub.provider_id
                )
        if update is not None and update.header.payload_sha256 != sub.payload_sha256:
            log.error("round %s: the envelope of %s does not match its receipt", rnd.id, sub.id)
            update = None
        yield update
    finally:
        if stream is not None:
            stream.close()


def take(round_id: str) -> Accumulator | None:
    """This process's partial of a closing round, removed from memory for the close to merge
    (an addition in flight finishes first; later ones start a new partial, which the close
    then forgets); None if there is none or it is void."""
    with _guard:
        part = _partials.pop(round_id, None)
    if part is None:
        return None
    with part.lock:
        part.sealed = True
        acc = part.acc
    return acc if acc.void is None and acc.count else None


def forget(round_id: str) -> None:
    """Drop this process's partial of a round that closed (the close replayed its updates)."""
    with _guard:
        _partials.pop(round_id, None)
