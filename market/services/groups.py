"""Contribution measured under encryption: random groups, their sums, and scores.

The server cannot look inside an update and the buyer sees only sums, so neither can tell a
contributor from a freeloader by inspection. What additions allow is group testing: each
round the server draws a fresh random partition of the round's providers into groups of at
least `group_size` (≥ quorum, a job setting; the quorum when unset) and keeps, beside the
round's total, the encrypted sum of each group. The partition is drawn by the server with
the operating system's randomness when the round opens, recorded, and shown to every party
(a provider sees its own group's members). At close a group with fewer than `group_size`
updates is merged into the smallest other one, so every sum the buyer may decrypt holds at
least `group_size` ≥ quorum updates, and the groups partition the round: no difference of
two released sums isolates anyone. A group sum damaged in storage past repair is withheld,
never released short (`_withhold_small`).

The buyer decrypts each group's sum and reports its **value**: the alignment of the group's
average update a_g with the step the other groups make, <a_g, u> / |u|² with u the average
of the other kept groups' sums (about 1 for a group pulling its weight, ½ for a group of two
where one sends zeros, negative against the step), clipped to [−1, 2]; a group the buyer
left out of its step (group-level robust aggregation) is worth −1. Alignment rather than a
held-out loss: with providers' data as different as they are, a group's update alone may
well worsen a held-out loss while improving the sum, and a loss barely moves once the model
has converged. A provider's **contribution score** φ is the least-squares solution of
value_g ≈ mean(φ_i for i in g) over every valued group of the job so far, each φ_i shrunk
towards the common mean (ridge on φ_i − mean), so a provider seen in few groups is scored
near the average rather than by the luck of its partners: the group-testing estimate that
GTG-Shapley refines with permutations, which an add-only preset cannot afford round by round.
Settlement splits each round's pool by it (`market.services.settlement`), and providers with
no score yet get an equal share.

The buyer cannot gain money by misreporting: the pool is escrowed and fully paid out to the
round's providers whatever the values say. What it can still do is move money between
providers (reporting one group better than it was), and leave a group out of its model step
(group-level robust aggregation: `agents.buyer.robust_step`), which is recorded with the
reason and visible to every party.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sqlmodel import Session, col, select

from crypto import Accumulator, CheckedSum, PublicContext
from market.blobs import BlobStore, BlobStream
from market.errors import AggregateUnavailableError, ConflictError, InvalidInputError
from market.lifecycle import ROUND_HAS_AGGREGATE
from market.models import GroupPublic, GroupValue, Job, Round, RoundGroup
from market.models.types import new_id

log = logging.getLogger(__name__)

# Ridge on each provider's deviation from the common mean: about one group observation's
# worth or less, so a few rounds already separate a freeloader; one lucky draw does not.
RIDGE = 0.03


def group_size(job: Job) -> int:
    size = job.spec.get("group_size")
    return max(int(size) if size else job.quorum, job.quorum)


def partition(providers: Sequence[str], size: int) -> list[list[str]]:
    """A uniformly random partition into max(1, n // size) groups of ≥ `size` (n ≥ size)."""
    order = list(providers)
    secrets.SystemRandom().shuffle(order)
    count = max(1, len(order) // max(size, 1))
    return [sorted(order[i::count]) for i in range(count)]


def open_groups(session: Session, job: Job, rnd: Round) -> None:
    """Draw and record the round's partition (not committed)."""
    for index, members in enumerate(partition(rnd.expected, group_size(job))):
        session.add(RoundGroup(id=new_id("grp"), round_id=rnd.id, index=index, members=members))


def groups_of(session: Session, rnd: Round) -> list[RoundGroup]:
    return list(
        session.exec(
            select(RoundGroup).where(RoundGroup.round_id == rnd.id).order_by(col(RoundGroup.index))
        ).all()
    )


def group_for(session: Session, rnd: Round, provider_id: str) -> RoundGroup:
    """The provider's group; a provider that joined after the draw goes to the smallest."""
    groups = groups_of(session, rnd)
    for group in groups:
        if provider_id in group.members:
            return group
    if not groups:  # a round opened before groups existed: one group of everyone
        group = RoundGroup(id=new_id("grp"), round_id=rnd.id, index=0, members=[])
        groups = [group]
    group = min(groups, key=lambda g: (len(g.members), g.index))
    group.members = sorted([*group.members, provider_id])
    session.add(group)
    return group


def seal(session: Session, job: Job, rnd: Round) -> list[str]:
    """At close: merge every group holding fewer than `group_size` updates into the smallest
    other non-empty group, until each released sum holds enough (not committed). What still
    holds fewer is withheld: its rows no longer point at a sum, and the keys of the blobs
    that held one are returned for deletion once this commits."""
    size = group_size(job)
    live = [g for g in groups_of(session, rnd) if g.acc_count > 0]
    counts = {g.index: g.acc_count for g in live}
    while len(live) > 1:
        small = min(live, key=lambda g: (counts[g.index], g.index))
        if counts[small.index] >= size:
            break
        live.remove(small)
        into = min(live, key=lambda g: (counts[g.index], g.index))
        counts[into.index] += counts[small.index]
        small.merged_into = into.index
        session.add(small)
        # What was merged into `small` before follows it.
        for g in groups_of(session, rnd):
            if g.merged_into == small.index and g is not small:
                g.merged_into = into.index
                session.add(g)
    return _withhold_small(session, rnd, size)


def _withhold_small(session: Session, rnd: Round, size: int) -> list[str]:
    """Never let the buyer decrypt, or isolate by difference, fewer than `size` updates.

    The merges above leave a sum short of `size` only when the group sums together hold
    fewer updates than the round's total: a group sum damaged in storage after some of its
    members' envelopes were released is rebuilt from the rest alone. A sum short of `size`
    is withheld unless it is the whole round (then it shows nothing the total does not);
    and if the updates no released sum holds are fewer than `size`, the total less the
    released sums would be theirs, so every group sum of the round is withheld."""
    sums = list(released(session, rnd).values())
    short = [rows for rows in sums if sum(g.acc_count for g in rows) < min(size, rnd.acc_count)]
    shown = {p for rows in sums if rows not in short for g in rows for p in g.acc_providers}
    withheld = [g for rows in short for g in rows]
    if 0 < len(set(rnd.acc_providers) - shown) < size:
        withheld = [g for rows in sums for g in rows]
    stale = []
    for g in withheld:
        stale += [g.acc_key] if g.acc_key not in (None, rnd.acc_key) else []
        g.acc_key, g.acc_count, g.acc_providers, g.acc_sha256 = None, 0, [], None
        session.add(g)
    if withheld:
        log.error(
            "round %s: group sums hold %d of its %d updates; %d group rows withheld",
            rnd.id, len(shown), rnd.acc_count, len(withheld),
        )  # fmt: skip
    return stale


def released(session: Session, rnd: Round) -> dict[int, list[RoundGroup]]:
    """Index of each group the buyer may decrypt → the group rows whose sums make it up."""
    parts: dict[int, list[RoundGroup]] = defaultdict(list)
    for g in groups_of(session, rnd):
        if g.acc_count > 0:
            parts[g.index if g.merged_into is None else g.merged_into].append(g)
    return dict(parts)


def open_group_aggregate(
    session: Session, blobs: BlobStore, ctx: PublicContext, rnd: Round, index: int
) -> BlobStream:
    """The encrypted sum of released group `index` (closed rounds only), as a stream: the
    stored sum itself when one row makes it up, else the rows' sums merged a piece at a
    time into one sum in memory."""
    if rnd.state not in ROUND_HAS_AGGREGATE:
        raise AggregateUnavailableError(f"round {rnd.number} is {rnd.state}, not closed")
    parts = released(session, rnd).get(index)
    if not parts:
        raise AggregateUnavailableError(f"round {rnd.number} has no group {index}")
    if len(parts) == 1:
        return blobs.open_read(str(parts[0].acc_key))
    total: Accumulator | None = None
    for g in parts:
        with blobs.open_file(str(g.acc_key)) as handle:
            part = CheckedSum.open(handle, ctx)
            total = total or Accumulator.empty_like(part.header)
            total.merge(part)
    assert total is not None
    chunks = total.chunks()
    head = next(chunks)
    size = len(head) + total.preset.codec.sum_bytes(total.param_count)
    return BlobStream(size, itertools.chain([head], chunks), chunks.close)


def group_aggregate_bytes(
    session: Session, blobs: BlobStore, ctx: PublicContext, rnd: Round, index: int
) -> bytes:
    """`open_group_aggregate`'s bytes, whole (small sums and tests)."""
    return open_group_aggregate(session, blobs, ctx, rnd, index).read_all()


def public(session: Session, rnd: Round, viewer_id: str, sees_all: bool) -> list[GroupPublic]:
    """The round's groups: all members for the buyer and operators, a provider its own."""
    closed = rnd.state in ROUND_HAS_AGGREGATE
    parts = released(session, rnd)
    out = []
    for g in groups_of(session, rnd):
        mine = viewer_id in g.members
        # A released group counts what was merged into it: the updates its sum holds.
        count = sum(p.acc_count for p in parts.get(g.index, [])) if g.merged_into is None else 0
        out.append(
            GroupPublic(
                index=g.index,
                count=count if (closed or sees_all) else 0,
                members=sorted(g.members) if (sees_all or mine) else [],
                merged_into=g.merged_into,
                value=g.value,
                loss_without=g.loss_without,
                loss_with=g.loss_with,
                excluded=g.excluded,
                reason=g.reason,
            )
        )
    return out


def value(reported: float) -> float:
    """A group's value as scores use it (the buyer's report, within [−1, 2])."""
    return max(-1.0, min(2.0, reported))


def record_values(session: Session, rnd: Round, values: Sequence[GroupValue]) -> None:
    """The buyer's evaluation of each released group (not committed); once per round."""
    if rnd.state not in ROUND_HAS_AGGREGATE:
        raise ConflictError(f"round {rnd.number} is {rnd.state}: no group to evaluate yet")
    parts = released(session, rnd)
    given = {v.index: v for v in values}
    if set(given) != set(parts):
        raise InvalidInputError(
            f"report every released group of round {rnd.number}: {sorted(parts)}",
            expected=sorted(parts),
        )
    rows = {g.index: g for g in groups_of(session, rnd)}
    if any(rows[i].value is not None for i in parts):
        same = all(
            (rows[i].value, rows[i].loss_without, rows[i].loss_with, rows[i].excluded)
            == (v.value, v.loss_without, v.loss_with, v.excluded)
            for i, v in given.items()
        )
        if same:
            return  # a replay of what was recorded
        raise ConflictError(f"round {rnd.number}'s group values are already recorded")
    for i, v in given.items():
        row = rows[i]
        row.value = v.value
        row.loss_without, row.loss_with = v.loss_without, v.loss_with
        row.excluded, row.reason = v.excluded, v.reason
        session.add(row)


def scores(session: Session, job: Job) -> dict[str, float]:
    """Each provider's contribution score from every valued group of the job so far."""
    rows = session.exec(
        select(RoundGroup)
        .join(Round, col(Round.id) == col(RoundGroup.round_id))
        .where(Round.job_id == job.id)
    ).all()
    members: dict[tuple[str, int], list[str]] = defaultdict(list)
    values: dict[tuple[str, int], float] = {}
    for g in rows:
        target = (g.round_id, g.index if g.merged_into is None else g.merged_into)
        members[target].extend(g.acc_providers)
        if g.merged_into is None and g.value is not None:
            values[target] = value(g.value)
    observations = [(members[k], v) for k, v in values.items() if members[k]]
    if not observations:
        return {}
    providers = sorted({p for m, _ in observations for p in m})
    column = {p: 1 + i for i, p in enumerate(providers)}  # column 0: the common mean
    n_rows = len(observations) + len(providers)
    a = np.zeros((n_rows, 1 + len(providers)))
    b = np.zeros(n_rows)
    for row, (group, v) in enumerate(observations):
        a[row, 0] = 1.0
        for p in group:
            a[row, column[p]] = 1.0 / len(group)
        b[row] = v
    # Ridge rows: each deviation ≈ 0 with weight RIDGE, so the system is always determined.
    a[len(observations) :, 1:] = math.sqrt(RIDGE) * np.eye(len(providers))
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    return {p: float(x[0] + x[column[p]]) for p in providers}
