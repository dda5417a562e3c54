"""A provider's public page: reputation, its history and its score over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from market.models import Account, ReputationEvent, ReputationPublic
from market.services import access, reputation, verification
from market.ui.charts import Point, Series
from market.ui.pages.common import provider_account

# A provider's page charts at most this many reputation points (the newest).
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class ProviderPage:
    reputation: ReputationPublic
    series: Series
    may_see_money: bool
    # Whether the provider counts as a real party (matched, inside quorums), and by whom.
    verified: str


def reputation_series(session: Session, provider_id: str) -> Series:
    """The score just after each recorded event (the newest `HISTORY_LIMIT` of them)."""
    events = list(
        session.exec(
            select(ReputationEvent)
            .where(ReputationEvent.provider_id == provider_id)
            .order_by(col(ReputationEvent.at), col(ReputationEvent.id))
        ).all()
    )
    first = max(0, len(events) - HISTORY_LIMIT)
    points = []
    for i in range(first, len(events)):
        e = events[i]
        # The score as it stood at the event's own time: older events decayed, none newer.
        alpha, beta = reputation.alpha_beta(events[: i + 1], e.at)
        value = alpha / (alpha + beta)
        points.append(
            Point(i + 1, value, f"Event {i + 1}, {e.kind} ({e.weight:+g}): score {value:.3f}")
        )
    return Series("reputation", points)


def provider_page(
    session: Session, provider_id: str, viewer: Account | None, *, now: datetime
) -> ProviderPage:
    """A provider's public reputation: score, history with reasons, score over time."""
    account = provider_account(session, provider_id)
    return ProviderPage(
        reputation=reputation.public(session, account, now=now, viewer=viewer, limit=HISTORY_LIMIT),
        series=reputation_series(session, provider_id),
        may_see_money=access.sees_provider_money(viewer, provider_id),
        verified=verification.describe(account),
    )
