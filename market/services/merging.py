"""The close of a round: the sums the buyer may decrypt, merged from what the processes recorded.

`close_sums` runs in the close's transaction, under the job's lock (`market.services.rounds`).
It merges the recorded parts of the round's total (`RoundPartial` rows without a group) and
the closing process's own partial, still in its memory, and replays from its envelope each
accepted update none of them covers: the partials still in other processes' memory are
superseded, and an update accepted just before a kill -9 is in the sum all the same. Each
random group's sum is completed the same way from its recorded parts and the envelopes of
members they miss, one group at a time, so the close holds two sums, the total and one
group's, plus a piece of one part or envelope (both are read from their blobs a piece at a
time); a group the total holds none of yet is added into it as one merge, so its members'
envelopes are not read a second time, and a group recorded whole is kept as it is. A round
of one group (the quorum is the whole round) has one sum: the total is the group's. The
merged sum's provider list is what settlement pays and the signed round-closed record
lists; it is checked against the accepted submissions and any difference is logged as an
error. Once the close commits, the remaining envelopes and every recorded part are deleted.

A job without a public context has no ciphertexts (ledger-only tests): its round's list of
accepted providers stands as it is.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import BinaryIO

from sqlmodel import Session, col, select

from crypto import Accumulator, CheckedSum, CryptoError, PublicContext
from market import blobkeys
from market.blobs import BlobStore
from market.lifecycle import ROUND_ABANDONED
from market.models import Job, Round, RoundGroup, RoundPartial, Submission
from market.services import groups, partials
from market.services.contexts import job_context

log = logging.getLogger(__name__)


def _legacy(ctx: PublicContext, key: str | None) -> Accumulator | None:
    """A running sum kept by a round collected before partial sums (none on new rounds)."""
    return None if key is None else Accumulator.from_bytes(partials.store().get_bytes(key), ctx)


def close_sums(session: Session, job: Job, rnd: Round) -> None:
    """The round's sum and its groups' sums, merged and written, pointed at by the round's
    rows (not committed; the caller holds the job's lock and commits)."""
    if job.context_key is None:
        return
    blobs = partials.store()
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
    total = _legacy(ctx, rnd.acc_key) or partials.empty_sum(ctx, job, rnd.number)
    _merge_parts(ctx, rnd, total, [cp for cp in checkpoints if cp.group_index is None])
    _merge_own(rnd, total, partials.take(rnd.id), set(subs))
    stale = [k for k in (rnd.acc_key,) if k is not None]
    rows = groups.groups_of(session, rnd)
    if _one_group(rows, checkpoints):
        # The group is the whole round: its sum is the total, one blob for both.
        _replay_missing(ctx, job, rnd, total, subs)
        key, sha256 = _write_total(blobs, job, rnd, total, subs)
        group = rows[0]
        group.acc_key = key if total.count else None
        group.acc_sha256 = sha256 if total.count else None
        group.acc_count, group.acc_providers = total.count, list(total.provider_ids)
        session.add(group)
    else:
        for group in rows:
            _close_group(session, blobs, ctx, job, rnd, group, total, subs, checkpoints, stale)
        # Accepted updates outside every group (a round opened before groups existed).
        _replay_missing(ctx, job, rnd, total, subs)
        key, sha256 = _write_total(blobs, job, rnd, total, subs)
    rnd.acc_key = key
    rnd.acc_count = total.count
    rnd.acc_providers = list(total.provider_ids)
    rnd.acc_sha256 = sha256
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
    partials.delete_after_commit(session, stale)
    partials.forget(rnd.id)


def _merge_own(rnd: Round, total: Accumulator, own: Accumulator | None, accepted: set[str]) -> None:
    """Merge this process's own partial, still in memory, into the total: the updates it
    holds need not be read back from their envelopes. Left out (and replayed instead) if
    it holds an update that is not accepted or one the recorded parts already hold."""
    if own is None:
        return
    inside = set(own.provider_ids)
    if not inside <= accepted or inside & set(total.provider_ids):
        log.error("round %s: this process's partial does not fit the close; left out", rnd.id)
        return
    total.merge(own)


def _one_group(rows: list[RoundGroup], checkpoints: list[RoundPartial]) -> bool:
    """A round whose one group is all of it and has no sum of its own yet."""
    return (
        len(rows) == 1
        and rows[0].acc_key is None
        and not any(cp.group_index is not None for cp in checkpoints)
    )


def _replay_missing(
    ctx: PublicContext, job: Job, rnd: Round, total: Accumulator, subs: dict[str, Submission]
) -> None:
    """Add into the total, from its envelope, each accepted update it does not hold."""
    for pid, sub in sorted(subs.items()):
        if pid not in total.provider_ids and sub.envelope_key is not None:
            with partials.replayed(ctx, job, rnd, sub) as update:
                if update is not None:
                    total.add(update)


def _write_total(
    blobs: BlobStore, job: Job, rnd: Round, total: Accumulator, subs: dict[str, Submission]
) -> tuple[str, str]:
    """Write the round's sum; its key and SHA-256."""
    key = blobkeys.round_sum(job.id, rnd.number)
    sha256 = blobs.put_stream(key, total.chunks())
    if set(total.provider_ids) != set(subs):
        log.error(
            "round %s: the merged sum holds %s but the accepted updates are %s; only those "
            "inside the sum are paid",
            rnd.id, sorted(total.provider_ids), sorted(subs),
        )  # fmt: skip
    return key, sha256


def _close_group(
    session: Session,
    blobs: BlobStore,
    ctx: PublicContext,
    job: Job,
    rnd: Round,
    group: RoundGroup,
    total: Accumulator,
    subs: dict[str, Submission],
    checkpoints: list[RoundPartial],
    stale: list[str],
) -> None:
    """One group's sum: its recorded parts, then each missing member's envelope once. A
    group none of whose members the total holds yet goes into it whole, as one merge;
    otherwise each replayed member the total lacks goes into both."""
    parts = [cp for cp in checkpoints if cp.group_index == group.index]
    if _kept_as_recorded(group, parts, total, subs):
        # The common case: nothing to merge, replay or write.
        _write_group(session, blobs, job, rnd, group, None, parts[0])
        checkpoints.remove(parts[0])
        return
    gsum = _legacy(ctx, group.acc_key) or partials.empty_sum(ctx, job, rnd.number)
    if group.acc_key is not None:
        stale.append(group.acc_key)
    whole = not set(group.members) & set(total.provider_ids)
    _merge_parts(ctx, rnd, gsum, parts)
    replays = 0
    for pid in sorted(group.members):
        sub = subs.get(pid)
        if sub is None or pid in gsum.provider_ids:
            continue
        if sub.envelope_key is None:
            log.error("round %s: %s has neither an envelope nor a sum", rnd.id, pid)
            continue
        with partials.replayed(ctx, job, rnd, sub) as update:
            if update is None:
                continue
            gsum.add(update)
            replays += 1
            if not whole and pid not in total.provider_ids:
                total.add(update)
    if whole and gsum.count:
        total.merge(gsum)
    # The group's sum is its one recorded part, unchanged: that blob serves as the sum
    # (kept, not written again).
    kept = (
        parts[0]
        if len(parts) == 1 and not replays and group.acc_key is None
        and set(gsum.provider_ids) == set(parts[0].providers)
        else None
    )  # fmt: skip
    _write_group(session, blobs, job, rnd, group, gsum, kept)
    if kept is not None:
        checkpoints.remove(kept)


def _kept_as_recorded(
    group: RoundGroup, parts: list[RoundPartial], total: Accumulator, subs: dict[str, Submission]
) -> bool:
    """The group's one recorded part holds every accepted member, the total holds them all
    already, and its blob is byte for byte what was written (the hash its row recorded then,
    recomputed as the blob streams by): that blob is the group's sum, and the hash the
    round-closed record signs, without reading it into a sum. Otherwise the slow path
    checks, merges and replays (`_merge_parts`)."""
    if group.acc_key is not None or len(parts) != 1:
        return False
    inside = set(parts[0].providers)
    if inside != {p for p in group.members if p in subs} or not inside <= set(total.provider_ids):
        return False
    digest = hashlib.sha256()
    try:
        for piece in partials.store().open_read(parts[0].key):
            digest.update(piece)
    except FileNotFoundError:
        return False
    return digest.hexdigest() == parts[0].sha256


def _merge_parts(
    ctx: PublicContext, rnd: Round, into: Accumulator, parts: list[RoundPartial]
) -> None:
    """Merge recorded parts into `into`, one at a time and a piece at a time from their
    blobs; a part that overlaps what is already in, whose blob does not hold what its row
    says, or whose bytes are not the ones its row hashed when it was written, is left out
    (and logged): the close then replays its updates from their envelopes, or leaves them
    out of the sum (and unpaid) when those are gone, instead of failing or serving a sum
    that is silently wrong."""
    for cp in parts:
        try:
            with partials.store().open_file(cp.key) as handle:
                if _sha256_of(handle) != cp.sha256:
                    log.error("round %s: part %s is not the blob recorded; left out", rnd.id, cp.id)
                    continue
                part = CheckedSum.open(handle, ctx)
                inside = set(part.header.provider_ids)
                if inside & set(into.provider_ids) or inside != set(cp.providers):
                    log.error("round %s: part %s overlaps the sum or its row; left out",
                              rnd.id, cp.id)  # fmt: skip
                    continue
                into.merge(part)
        except (FileNotFoundError, CryptoError) as exc:
            log.error("round %s: part %s cannot be read (%s); left out", rnd.id, cp.id, exc)


def _sha256_of(handle: BinaryIO) -> str:
    """The hash of the whole file, read a piece at a time; the file is left at its start."""
    digest = hashlib.sha256()
    while piece := handle.read(1 << 20):
        digest.update(piece)
    handle.seek(0)
    return digest.hexdigest()


def _write_group(
    session: Session,
    blobs: BlobStore,
    job: Job,
    rnd: Round,
    group: RoundGroup,
    gsum: Accumulator | None,
    kept: RoundPartial | None,
) -> None:
    """Point the group's row at its sum, with the hash of its blob: the recorded part
    `kept` when that is the whole sum, else `gsum` written out."""
    if kept is not None:
        group.acc_key, group.acc_count, group.acc_sha256 = kept.key, kept.count, kept.sha256
        group.acc_providers = list(kept.providers)
        session.delete(kept)
    elif gsum is None or gsum.count == 0:
        group.acc_key, group.acc_count, group.acc_providers = None, 0, []
        group.acc_sha256 = None
    else:
        key = blobkeys.group_sum(job.id, rnd.number, group.index)
        group.acc_sha256 = blobs.put_stream(key, gsum.chunks())
        group.acc_key, group.acc_count = key, gsum.count
        group.acc_providers = list(gsum.provider_ids)
    session.add(group)


_SWEEP_EVERY_S = 60.0
_last_sweep = [float("-inf")]


def sweep(session: Session, *, limit: int = 200, force: bool = False) -> int:
    """Delete the envelopes of rounds that ended without a sum (failed or cancelled), at
    most once a minute per process; returns how many. The blobs go once the caller commits
    (`tick` does); closed rounds delete theirs when the close commits."""
    if not force and time.monotonic() - _last_sweep[0] < _SWEEP_EVERY_S:
        return 0
    _last_sweep[0] = time.monotonic()
    rows = session.exec(
        select(Submission)
        .join(Round, col(Round.id) == col(Submission.round_id))
        .where(
            col(Submission.envelope_key).is_not(None),
            col(Round.state).in_(ROUND_ABANDONED),
        )
        .limit(limit)
    ).all()
    keys = [str(s.envelope_key) for s in rows]
    for sub in rows:
        sub.envelope_key = None
        session.add(sub)
    partials.delete_after_commit(session, keys)
    return len(keys)
