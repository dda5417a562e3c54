"""Provider reputation as matching reads it.

A minimal lookup for now: every provider scores the prior 0.5 (Beta(1, 1)). A later issue
records events and computes the time-decayed Beta score of DESIGN.md behind the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

DEFAULT_SCORE = 0.5


def score(session: Session, provider_id: str) -> float:
    """The provider's reputation in [0, 1]."""
    return scores(session, [provider_id])[provider_id]


def scores(session: Session, provider_ids: Iterable[str]) -> dict[str, float]:
    """Bulk form of `score`, used by matching over many listings."""
    return {pid: DEFAULT_SCORE for pid in provider_ids}
