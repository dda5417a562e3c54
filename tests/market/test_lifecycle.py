"""The lifecycle's pure rules (market/lifecycle.py): the round rules of test_rounds.py as
decisions over plain facts, and the state tables kept in step with the stored types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market import lifecycle as lc
from market.models import jobs, offers, rounds

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
EARLIER = NOW - timedelta(seconds=1)


def verdict(count: int, expected: int, *, quorum: int = 2, attempt: int = 1,
            deadline: datetime = LATER) -> lc.RoundVerdict:  # fmt: skip
    return lc.round_verdict(
        count=count, expected=expected, quorum=quorum, attempt=attempt, deadline=deadline, now=NOW
    )


def test_round_closes_when_every_provider_submitted() -> None:
    """Quorum alone does not close a round early; the last expected update does."""
    assert verdict(3, 3) == lc.Close("all-in")
    assert verdict(2, 3) == lc.Wait()


def test_everyone_in_below_quorum_waits_for_the_deadline() -> None:
    """Everyone in but below quorum: the round waits, then is retried at the deadline."""
    assert verdict(1, 1, quorum=2) == lc.Wait()
    assert verdict(1, 1, quorum=2, deadline=EARLIER) == lc.Retry()


def test_deadline_with_quorum_closes_the_round() -> None:
    """At the deadline (inclusive), a round holding at least quorum updates closes."""
    assert verdict(2, 3, deadline=EARLIER) == lc.Close("deadline")
    assert verdict(2, 3, deadline=NOW) == lc.Close("deadline")  # the deadline itself is late


def test_below_quorum_retries_once_then_fails() -> None:
    """Below quorum at the deadline: attempt 1 is retried, attempt 2 fails the job."""
    assert verdict(1, 3, deadline=EARLIER) == lc.Retry()
    failed = verdict(1, 3, attempt=2, deadline=EARLIER)
    assert isinstance(failed, lc.Fail) and "below quorum twice" in failed.reason


def test_the_retried_attempt_closes_like_the_first() -> None:
    """Attempt 2 closes all-in before its deadline, or at it with quorum, as attempt 1 does."""
    assert verdict(2, 2, attempt=2) == lc.Close("all-in")
    assert verdict(2, 3, attempt=2, deadline=EARLIER) == lc.Close("deadline")
    assert verdict(1, 3, attempt=2) == lc.Wait()


@given(
    count=st.integers(0, 50), expected=st.integers(1, 50), quorum=st.integers(1, 10),
    attempt=st.sampled_from([1, 2]), late=st.booleans(),
)  # fmt: skip
def test_a_round_never_closes_below_quorum_and_always_decides_when_late(
    count: int, expected: int, quorum: int, attempt: int, late: bool
) -> None:
    """Never closed below quorum; always decided once late; waits while early and short."""
    v = verdict(count, expected, quorum=quorum, attempt=attempt,
                deadline=EARLIER if late else LATER)  # fmt: skip
    if isinstance(v, lc.Close):
        assert count >= quorum
    if late:
        assert not isinstance(v, lc.Wait)
    if not late and count < max(quorum, expected):
        assert v == lc.Wait()


def test_publication_deadline() -> None:
    """Past the deadline the job ends: completed after the last round, failed by the buyer
    before it; before the deadline (or with no closed round) nothing happens."""
    assert lc.publish_verdict(round_number=2, rounds_total=5, due=LATER, now=NOW) == lc.Wait()
    assert lc.publish_verdict(round_number=2, rounds_total=5, due=None, now=NOW) == lc.Wait()
    assert lc.publish_verdict(round_number=5, rounds_total=5, due=EARLIER, now=NOW) == lc.Complete()
    ended = lc.publish_verdict(round_number=2, rounds_total=5, due=EARLIER, now=NOW)
    assert isinstance(ended, lc.FailByBuyer) and "round 3" in ended.reason
    at_due = lc.publish_verdict(round_number=2, rounds_total=5, due=NOW, now=NOW)
    assert isinstance(at_due, lc.FailByBuyer)  # the deadline itself is late


@pytest.mark.parametrize(
    ("enum", "stored", "row"),
    [(lc.JobState, jobs.JobState, jobs.Job), (lc.RoundState, rounds.RoundState, rounds.Round),
     (lc.OfferState, offers.OfferState, offers.Offer)],
)  # fmt: skip
def test_the_states_are_the_stored_ones(enum: type[lc.StrEnum], stored: object, row: Any) -> None:
    """The models spell their states with the lifecycle's enums, not strings of their own:
    the same class, and each state column's default one of its members."""
    assert stored is enum
    assert row.model_fields["state"].default in set(enum)


def test_transition_tables_cover_every_state_and_ended_states_are_final() -> None:
    """Every state has a row; an ended job goes nowhere; a forbidden move is named."""
    for table, enum in [(lc.JOB_TRANSITIONS, lc.JobState), (lc.ROUND_TRANSITIONS, lc.RoundState),
                        (lc.OFFER_TRANSITIONS, lc.OfferState)]:  # fmt: skip
        assert set(table) == set(enum)
    for state in lc.JOB_ENDED:
        assert lc.JOB_TRANSITIONS[state] == frozenset()
    assert lc.may_move(lc.JOB_TRANSITIONS, "running", "completed")
    assert not lc.may_move(lc.JOB_TRANSITIONS, "completed", "running")
    with pytest.raises(lc.TransitionError, match="from published to collecting"):
        lc.check_move("round", lc.ROUND_TRANSITIONS, "published", "collecting")


def test_a_state_is_its_stored_string() -> None:
    """A state compares and formats as its stored string; groups hold the right states."""
    assert lc.RoundState.CLOSED == "closed" and f"{lc.JobState.RUNNING}" == "running"
    assert "published" in lc.ROUND_HAS_AGGREGATE and "collecting" not in lc.ROUND_HAS_AGGREGATE
