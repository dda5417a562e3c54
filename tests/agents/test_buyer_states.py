"""The buyer agent waits for the round states the server's lifecycle names."""

from __future__ import annotations

from agents import buyer
from market import lifecycle


def test_buyer_fetches_aggregates_of_the_lifecycles_aggregate_states() -> None:
    """A round the buyer treats as having an aggregate is exactly `ROUND_HAS_AGGREGATE`."""
    assert set(buyer.ROUND_HAS_AGGREGATE) == set(lifecycle.ROUND_HAS_AGGREGATE)
