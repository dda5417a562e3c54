"""Provider reputation: a Beta score with time decay over recorded events.

    score = α / (α + β),  α = 1 + Σ decay^age · w  over positive events (w > 0),
                          β = 1 + Σ decay^age · |w| over negative events (w < 0),

with `age` in days since the event and `decay` per day (default 0.98, `POLLEN_REPUTATION_DECAY`).
A provider with no history scores the prior 0.5. Events, each with a recorded reason and an
idempotency key (recording the same event twice counts it once):

| kind                  | weight | when                                                    |
| --------------------- | ------ | ------------------------------------------------------- |
| on-time-submission    | +1     | a valid envelope accepted before the round's deadline   |
| included              | +1     | the provider's update is in a closed round's aggregate  |
| job-completed         | +2     | its update is in the last round of a completed job      |
| missed-deadline       | −2     | expected in a round that closed or retried without it   |
| invalid-submission    | −2     | an envelope refused by validation                       |
| refused-after-accept  | −3     | the provider withdrew from a job it had accepted        |

Matching reads `scores` (a job's `min_reputation` filters listings) and settlement weighs each
provider's share by `factor_milli`.

The history is public, but which provider took part in which job is not: a viewer that is
neither the provider itself, an operator, nor the buyer of the event's job sees the kind,
weight and day of each event with a reason that names no job (`access.sees_event_details`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from market.models import Account, ReputationEvent, ReputationEventPublic, ReputationPublic
from market.models.types import new_id, utcnow
from market.services import access

log = logging.getLogger(__name__)

DEFAULT_SCORE = 0.5
WEIGHTS = {
    "on-time-submission": 1.0,
    "included": 1.0,
    "job-completed": 2.0,
    "missed-deadline": -2.0,
    "invalid-submission": -2.0,
    "refused-after-accept": -3.0,
}
_config = {"decay": 0.98}
# What anyone may read of an event whose job they are not party to.
PUBLIC_REASONS = {
    "on-time-submission": "valid update before a round's deadline",
    "included": "update included in a round's aggregate",
    "job-completed": "saw a job through to completion",
    "missed-deadline": "no update by a round's deadline",
    "invalid-submission": "envelope refused by validation",
    "refused-after-accept": "withdrew from a job after accepting its offer",
}


def configure(*, decay: float) -> None:
    """Set the per-day decay (the app does this from its Settings at startup)."""
    _config["decay"] = decay


@dataclass(frozen=True)
class Event:
    """One event to record: who, what, why, and the key that makes recording it idempotent."""

    provider_id: str
    kind: str
    reason: str
    key: str
    job_id: str | None = None
    round_number: int | None = None


_KEYS_PER_QUERY = 500  # well under SQLite's limit of bound parameters


def record_all(session: Session, events: Iterable[Event], *, now: datetime) -> int:
    """Add every event whose key is not on record yet (not committed); returns how many
    were new. One query per 500 keys, not one per event: a round's close records two
    events for each of its providers."""
    fresh = {e.key: e for e in events}  # the same key twice in one call counts once
    keys = list(fresh)
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        part = keys[start : start + _KEYS_PER_QUERY]
        known = session.exec(
            select(ReputationEvent.key).where(col(ReputationEvent.key).in_(part))
        ).all()
        for key in known:
            del fresh[key]
    for e in fresh.values():
        session.add(
            ReputationEvent(
                id=new_id("rep"),
                provider_id=e.provider_id,
                kind=e.kind,
                weight=WEIGHTS[e.kind],
                reason=e.reason[:300],
                job_id=e.job_id,
                round_number=e.round_number,
                key=e.key,
                at=now,
            )
        )
        log.debug("reputation %s %s: %s", e.provider_id, e.kind, e.reason)
    if fresh:
        kinds = Counter(e.kind for e in fresh.values())
        log.info("reputation: %s", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return len(fresh)


def record(
    session: Session,
    provider_id: str,
    kind: str,
    reason: str,
    *,
    key: str,
    now: datetime,
    job_id: str | None = None,
    round_number: int | None = None,
) -> None:
    """Add one event (not committed); the same `key` twice records it once."""
    record_all(session, [Event(provider_id, kind, reason, key, job_id, round_number)], now=now)


def alpha_beta(events: Iterable[ReputationEvent], now: datetime) -> tuple[float, float]:
    """The Beta evidence (α, β) of `events` as seen at `now` (older events count less)."""
    alpha = beta = 1.0
    decay = _config["decay"]
    for e in events:
        age_days = max((now - e.at).total_seconds(), 0.0) / 86400
        w = e.weight * decay**age_days
        if w > 0:
            alpha += w
        else:
            beta -= w
    return alpha, beta


def _events(session: Session, provider_ids: Iterable[str]) -> dict[str, list[ReputationEvent]]:
    ids = list(provider_ids)
    out: dict[str, list[ReputationEvent]] = defaultdict(list)
    if not ids:
        return out
    rows = session.exec(
        select(ReputationEvent)
        .where(col(ReputationEvent.provider_id).in_(ids))
        .order_by(col(ReputationEvent.at), col(ReputationEvent.id))
    ).all()
    for e in rows:
        out[e.provider_id].append(e)
    return out


def score(session: Session, provider_id: str, *, now: datetime | None = None) -> float:
    """The provider's reputation in [0, 1]."""
    return scores(session, [provider_id], now=now)[provider_id]


def scores(
    session: Session, provider_ids: Iterable[str], *, now: datetime | None = None
) -> dict[str, float]:
    """Bulk form of `score`, used by matching over many listings."""
    ids = list(provider_ids)
    now = now or utcnow()
    events = _events(session, ids)
    out = {}
    for pid in ids:
        alpha, beta = alpha_beta(events.get(pid, []), now)
        out[pid] = alpha / (alpha + beta)
    return out


def factor_milli(score_value: float) -> int:
    """Settlement's reputation factor in thousandths: 500 (score 0) to 1000 (score 1)."""
    return 500 + round(500 * score_value)


def _event_view(e: ReputationEvent, detailed: bool) -> ReputationEventPublic:
    if detailed:
        return ReputationEventPublic(
            kind=e.kind, weight=e.weight, reason=e.reason, job_id=e.job_id,
            round=e.round_number, at=e.at,
        )  # fmt: skip
    # The day only: an exact instant would match a round's close time.
    day = e.at.replace(hour=0, minute=0, second=0, microsecond=0)
    reason = PUBLIC_REASONS.get(e.kind, e.kind)
    return ReputationEventPublic(
        kind=e.kind, weight=e.weight, reason=reason, job_id=None, round=None, at=day
    )


def public(
    session: Session,
    account: Account,
    *,
    now: datetime,
    viewer: Account | None,
    limit: int = 200,
) -> ReputationPublic:
    """A provider's score and history as `viewer` may read it (None: anonymous)."""
    events = _events(session, [account.id]).get(account.id, [])
    alpha, beta = alpha_beta(events, now)
    shown = list(reversed(events[-limit:]))
    detailed = access.sees_event_details(
        session, viewer, account.id, {e.job_id for e in shown if e.job_id}
    )
    return ReputationPublic(
        provider_id=account.id,
        name=account.name,
        score=alpha / (alpha + beta),
        alpha=alpha,
        beta=beta,
        events=len(events),
        history=[_event_view(e, e.job_id is None or e.job_id in detailed) for e in shown],
    )


def providers(session: Session) -> list[Account]:
    return list(
        session.exec(
            select(Account).where(Account.role == "provider").order_by(col(Account.created_at))
        ).all()
    )


def record_invalid(
    session: Session,
    job_id: str,
    round_number: int,
    provider_id: str,
    envelope_sha256: str,
    error: Exception,
    *,
    now: datetime,
) -> None:
    """An envelope refused by validation (`envelope_sha256`: of all its bytes): a negative
    event, committed on its own (the same bytes sent twice count once)."""
    digest = envelope_sha256[:16]
    record(
        session, provider_id, "invalid-submission",
        f"envelope refused for job {job_id} round {round_number}: {error}",
        key=f"rep:{job_id}:{round_number}:{provider_id}:invalid:{digest}", now=now,
        job_id=job_id, round_number=round_number,
    )  # fmt: skip
    session.commit()  # the upload is refused right after: the event must stand alone
