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

Closing a round (`close_sums`, under the job's lock, in the close's transaction) merges the
recorded parts of the total and replays, from its envelope, each accepted update none of
them covers: the partials still in other processes' memory are superseded, and an update
accepted just before a kill -9 is in the sum all the same. The same pass completes each
group's sum from its recorded parts and the envelopes of members they miss, one group at a
time, so no process ever holds more than a few models: the total, one group's sum, one
part or envelope. The merged sum's provider list is what settlement pays and the signed
round-closed record lists; it is checked against the accepted submissions and any
difference is logged as an error. Once the close has committed, the remaining envelopes and
every recorded part are deleted (`after_commit`).

A job without a public context has no ciphertexts (ledger-only tests): its round's list of
accepted providers stands as it is.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from crypto import (
    Accumulator,
    CryptoError,
    EnvelopeBinding,
    PublicContext,
    ValidatedEnvelope,
    validate_envelope,
)
from market.blobs import BlobStore
from market.models import Job, Round, RoundGroup, RoundPartial, Submission
from market.models.types import new_id
from market.services import groups
from market.services.locks import locked_job, locked_round

log = logging.getLogger(__name__)

_DELETE_AFTER_COMMIT = "pollen.delete_after_commit"


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


# --- the job's public context, parsed once per process --------------------------------------

_context_guard = threading.Lock()
_contexts: OrderedDict[str, PublicContext] = OrderedDict()
_CONTEXT_CACHE = 16


def job_context(blobs: BlobStore, job: Job) -> PublicContext:
    """The job's public context, parsed once per process (keyed by its fingerprint)."""
    assert job.context_key is not None and job.fingerprint is not None
    with _context_guard:
        ctx = _contexts.get(job.fingerprint)
        if ctx is not None:
            _contexts.move_to_end(job.fingerprint)
            return ctx.for_preset(job.preset_id)
    ctx = PublicContext.from_bytes(blobs.get_bytes(job.context_key))
    with _context_guard:
        _contexts[job.fingerprint] = ctx
        while len(_contexts) > _CONTEXT_CACHE:
            _contexts.popitem(last=False)
    return ctx.for_preset(job.preset_id)


def _empty(ctx: PublicContext, job: Job, number: int) -> Accumulator:
    assert job.param_count is not None
    return Accumulator.empty(
        ctx, job_id=job.id, round=number, param_count=job.param_count, summands=job.max_providers
    )


def _round_prefix(job_id: str, number: int) -> str:
    return f"jobs/{job_id}/rounds/{number:04d}"


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


def add(
    engine: Engine, ctx: PublicContext, job: Job, rnd: Round, update: ValidatedEnvelope
) -> None:
    """Add a committed update into this process's partial sum of its round; checkpoint it
    when due. A failure here loses nothing: the envelope is replayed at close."""
    while True:
        with _guard:
            part = _partials.get(rnd.id)
            if part is None:
                part = _Partial(job.id, rnd.number, _empty(ctx, job, rnd.number))
                _partials[rnd.id] = part
        with part.lock:
            if part.sealed:
                continue  # a checkpoint took it meanwhile
            part.acc.add(update)
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
    with _guard:
        part = _partials.pop(round_id, None)
    if part is None:
        return False
    with part.lock:  # an addition in flight finishes first; later ones start a new partial
        part.sealed = True
        acc = part.acc
    if acc.count == 0:
        return False
    blobs = store()
    data = acc.to_bytes()
    key = f"{_round_prefix(part.job_id, part.number)}/partial-{new_id('prt')}.bin"
    blobs.put_bytes(key, data)
    try:
        with Session(engine) as session, locked_job(session, part.job_id) as job:
            rnd = locked_round(session, job, part.number)
            if rnd.state != "collecting":
                _delete(blobs, [key])
                return False
            session.add(
                RoundPartial(
                    id=new_id("prt"), round_id=round_id, key=key, count=acc.count,
                    providers=list(acc.provider_ids), sha256=hashlib.sha256(data).hexdigest(),
                )
            )  # fmt: skip
            session.flush()
            _release(session, rnd)
            session.commit()
    except Exception:
        # Not recorded: the envelopes still hold these updates, the close replays them.
        log.exception("checkpoint of round %s not recorded", round_id)
        _delete(blobs, [key])
        return False
    log.info("round %s: checkpoint of %d updates", round_id, acc.count)
    return True


def build_group(engine: Engine, ctx: PublicContext, job: Job, number: int, index: int) -> bool:
    """Every member of group `index` is in: write the sum of the members no earlier part of
    the group holds, from their envelopes (one at a time), and record it; False if there was
    nothing to build or the round no longer collects. A failure loses nothing: the close
    builds what is missing from the envelopes."""
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
    gsum = _empty(ctx, job, number)
    for sub in sorted(subs, key=lambda x: x.provider_id):
        update = _replay(ctx, job, rnd, sub)
        if update is None:
            return False
        gsum.add(update)
    blobs = store()
    data = gsum.to_bytes()
    key = f"{_round_prefix(job.id, number)}/partial-g{index:03d}-{new_id('prt')}.bin"
    blobs.put_bytes(key, data)
    try:
        with Session(engine) as session, locked_job(session, job.id) as fresh:
            rnd = locked_round(session, fresh, number)
            if rnd.state != "collecting" or _covered(session, rnd.id, index) & set(
                gsum.provider_ids
            ):
                _delete(blobs, [key])
                return False
            session.add(
                RoundPartial(
                    id=new_id("prt"), round_id=rnd.id, group_index=index, key=key,
                    count=gsum.count, providers=list(gsum.provider_ids),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )  # fmt: skip
            session.flush()
            _release(session, rnd)
            session.commit()
    except Exception:
        log.exception("sum of group %d of round %s not recorded", index, rnd.id)
        _delete(blobs, [key])
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


# --- the close: merge checkpoints, replay the rest ----------------------------------------


def _delete(blobs: BlobStore, keys: Iterable[str]) -> None:
    for key in keys:
        try:
            blobs.delete(key)
        except OSError:
            log.warning("could not delete blob %s", key, exc_info=True)


def delete_after_commit(session: Session, keys: Iterable[str]) -> None:
    """Delete these blobs once the session's transaction commits (never on a rollback)."""
    session.info.setdefault(_DELETE_AFTER_COMMIT, []).extend(keys)


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    keys = session.info.pop(_DELETE_AFTER_COMMIT, None)
    if keys and _policy.blobs is not None:
        _delete(_policy.blobs, keys)


@event.listens_for(OrmSession, "after_rollback")
def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_DELETE_AFTER_COMMIT, None)


def _replay(ctx: PublicContext, job: Job, rnd: Round, sub: Submission) -> ValidatedEnvelope | None:
    """The stored envelope of `sub`, checked again against its binding and its hash."""
    assert job.param_count is not None and sub.envelope_key is not None
    binding = EnvelopeBinding(job.id, rnd.number, sub.provider_id, job.param_count,
                              job.max_providers)  # fmt: skip
    try:
        update = validate_envelope(store().get_bytes(sub.envelope_key), ctx, binding)
    except (CryptoError, OSError):
        log.exception("round %s: the envelope of %s cannot be replayed", rnd.id, sub.provider_id)
        return None
    if update.header.payload_sha256 != sub.payload_sha256:
        log.error("round %s: the envelope of %s does not match its receipt", rnd.id, sub.id)
        return None
    return update


def _legacy(ctx: PublicContext, key: str | None) -> Accumulator | None:
    """A running sum kept by a round collected before partial sums (none on new rounds)."""
    return None if key is None else Accumulator.from_bytes(store().get_bytes(key), ctx)


def close_sums(session: Session, job: Job, rnd: Round) -> None:
    """The round's sum and its groups' sums, merged and written, pointed at by the round's
    rows (not committed; the caller holds the job's lock and commits)."""
    if job.context_key is None:
        return
    blobs = store()
    ctx = job_context(blobs, job)
    subs = {
        s.provider_id: s
        for s in session.exec(select(Submission).where(Submission.round_id == rnd.id))
    }
    checkpoints = list(
        session.exec(
            select(RoundPartial)
            .where(RoundPartial.round_id == rnd.id)
            .order_by(col(RoundPartial.created_at), col(RoundPartial.id))
        )
    )
    total = _legacy(ctx, rnd.acc_key) or _empty(ctx, job, rnd.number)
    _merge_parts(ctx, rnd, total, [cp for cp in checkpoints if cp.group_index is None])
    in_total = set(total.provider_ids)
    stale = [k for k in (rnd.acc_key,) if k is not None]
    # One group at a time: its recorded parts, then each missing member's envelope once,
    # into the group and, when no checkpoint holds it yet, into the total.
    for group in groups.groups_of(session, rnd):
        gsum = _legacy(ctx, group.acc_key) or _empty(ctx, job, rnd.number)
        if group.acc_key is not None:
            stale.append(group.acc_key)
        _merge_parts(ctx, rnd, gsum, [cp for cp in checkpoints if cp.group_index == group.index])
        for pid in sorted(group.members):
            sub = subs.get(pid)
            if sub is None or pid in gsum.provider_ids:
                continue
            if sub.envelope_key is None:
                log.error("round %s: %s has neither an envelope nor a sum", rnd.id, pid)
                continue
            update = _replay(ctx, job, rnd, sub)
            if update is None:
                continue
            gsum.add(update)
            if pid not in in_total:
                total.add(update)
                in_total.add(pid)
        _write_group(session, blobs, job, rnd, group, gsum)
    # Accepted updates outside every group (a round opened before groups existed).
    for pid, sub in sorted(subs.items()):
        if pid not in in_total and sub.envelope_key is not None:
            update = _replay(ctx, job, rnd, sub)
            if update is not None:
                total.add(update)
                in_total.add(pid)
    data = total.to_bytes()
    key = f"{_round_prefix(job.id, rnd.number)}/sum-{new_id('sum')}.bin"
    blobs.put_bytes(key, data)
    if set(total.provider_ids) != set(subs):
        log.error(
            "round %s: the merged sum holds %s but the accepted updates are %s; only those "
            "inside the sum are paid",
            rnd.id, sorted(total.provider_ids), sorted(subs),
        )  # fmt: skip
    rnd.acc_key = key
    rnd.acc_count = total.count
    rnd.acc_providers = list(total.provider_ids)
    rnd.acc_sha256 = hashlib.sha256(data).hexdigest()
    session.add(rnd)
    # Once this commits, the sums hold every update: envelopes and checkpoints are garbage.
    stale += [cp.key for cp in checkpoints]
    for sub in subs.values():
        if sub.envelope_key is not None:
            stale.append(sub.envelope_key)
            sub.envelope_key = None
            session.add(sub)
    for cp in checkpoints:
        session.delete(cp)
    delete_after_commit(session, stale)
    with _guard:
        _partials.pop(rnd.id, None)


def _merge_parts(
    ctx: PublicContext, rnd: Round, into: Accumulator, parts: list[RoundPartial]
) -> None:
    """Merge recorded parts into `into`, one at a time; a part that overlaps what is already
    in, or whose blob does not hold what its row says, is left out (and logged)."""
    for cp in parts:
        part = Accumulator.from_bytes(store().get_bytes(cp.key), ctx)
        inside = set(part.provider_ids)
        if inside & set(into.provider_ids) or inside != set(cp.providers):
            log.error("round %s: part %s overlaps the sum or its row; left out", rnd.id, cp.id)
            continue
        into.merge(part)


def _write_group(
    session: Session, blobs: BlobStore, job: Job, rnd: Round, group: RoundGroup, gsum: Accumulator
) -> None:
    if gsum.count == 0:
        group.acc_key, group.acc_count, group.acc_providers = None, 0, []
    else:
        key = f"{_round_prefix(job.id, rnd.number)}/group-{group.index:03d}-{new_id('sum')}.bin"
        blobs.put_bytes(key, gsum.to_bytes())
        group.acc_key, group.acc_count = key, gsum.count
        group.acc_providers = list(gsum.provider_ids)
    session.add(group)


_SWEEP_EVERY_S = 60.0
_last_sweep = [float("-inf")]


def sweep(session: Session, *, limit: int = 200, force: bool = False) -> int:
    """Delete the envelopes of rounds that ended without a sum (failed or cancelled), at
    most once a minute per process; returns how many. Closed rounds delete theirs when the
    close commits."""
    if not force and time.monotonic() - _last_sweep[0] < _SWEEP_EVERY_S:
        return 0
    _last_sweep[0] = time.monotonic()
    rows = session.exec(
        select(Submission)
        .join(Round, col(Round.id) == col(Submission.round_id))
        .where(
            col(Submission.envelope_key).is_not(None),
            col(Round.state).in_(("failed", "cancelled")),
        )
        .limit(limit)
    ).all()
    keys = [str(s.envelope_key) for s in rows]
    for sub in rows:
        sub.envelope_key = None
        session.add(sub)
    delete_after_commit(session, keys)
    session.commit()
    return len(keys)
