"""Matching as a pure function: eligibility, value order, budget, capacity, one per provider."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from market.matching import (
    Demand,
    SchemaShape,
    Supply,
    compatible,
    explain,
    match,
    why_incompatible,
)

BASE = SchemaShape.from_schema(
    {
        "features": [{"name": "a", "type": "float"}, {"name": "b", "type": "int"}],
        "label": {"name": "y", "classes": [0, 1]},
    }
)
WIDER = SchemaShape.from_schema(
    {
        "features": [
            {"name": "a", "type": "float"},
            {"name": "b", "type": "int"},
            {"name": "c", "type": "float"},
        ],
        "label": {"name": "y", "classes": [0]},
    }
)


def supply(i: int, **over: Any) -> Supply:
    fields: dict[str, Any] = {
        "listing_id": f"l{i}",
        "provider_id": f"p{i}",
        "schema": BASE,
        "samples": 1000,
        "ask_cents": 10,
        "currency": "usd",
        "free_capacity": 1,
        "reputation": 0.5,
        "verified": True,
    }
    fields.update(over)
    return Supply(**fields)


def demand(**over: Any) -> Demand:
    fields: dict[str, Any] = {
        "job_id": "j",
        "schema": BASE,
        "min_samples": 100,
        "sample_cap": 5000,
        "min_reputation": 0.0,
        "price_cap_cents": 50,
        "currency": "usd",
        "rounds": 2,
        "slots": 3,
        "budget_left_cents": 1000,
    }
    fields.update(over)
    return Demand(**fields)


def _shape(features: list[dict[str, Any]], label: dict[str, Any]) -> SchemaShape:
    return SchemaShape.from_schema({"features": features, "label": label})


def test_schema_compatibility_rules() -> None:
    """Fewer classes fit; an extra column, another label or a narrower type does not."""
    fewer = _shape([{"name": "a"}, {"name": "b", "type": "int"}], {"name": "y", "classes": [0]})
    assert compatible(BASE, fewer)
    assert not compatible(BASE, WIDER)
    assert why_incompatible(BASE, WIDER) == "extra column 'c' (not in the job's schema)"
    other_label = _shape(
        [{"name": "a", "type": "float"}, {"name": "b", "type": "int"}],
        {"name": "z", "classes": [0, 1]},
    )
    assert not compatible(BASE, other_label)
    widened = _shape(
        [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        {"name": "y", "classes": [0, 1]},
    )
    assert compatible(BASE, widened)  # integer data serves a float feature
    narrowed = _shape(
        [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        {"name": "y", "classes": [0, 1]},
    )
    assert why_incompatible(BASE, narrowed) == "column 'b' is float, the job needs int"


def test_categorical_missing_values_and_tasks_decide_compatibility() -> None:
    """Text columns need a categorical feature, gaps need a fill, regression needs numbers."""
    job = _shape(
        [
            {"name": "region", "type": "categorical", "categories": ["n", "s"], "fill": "n"},
            {"name": "income", "fill": 1.0},
        ],
        {"name": "outcome", "classes": ["default", "repaid"]},
    )
    listing = [
        {"name": "region", "type": "categorical", "missing": True},
        {"name": "income", "missing": True},
    ]
    assert compatible(job, _shape(listing, {"name": "outcome", "classes": ["repaid"]}))
    assert "not one of the job's classes" in str(
        why_incompatible(job, _shape(listing, {"name": "outcome", "classes": ["late"]}))
    )
    no_fill = _shape(
        [{"name": "region", "type": "categorical", "categories": ["n", "s"]}, {"name": "income"}],
        {"name": "outcome", "classes": ["default", "repaid"]},
    )
    assert "has missing values and the job declares no fill" in str(
        why_incompatible(no_fill, _shape(listing, {"name": "outcome", "classes": ["repaid"]}))
    )
    regression = _shape([{"name": "x"}], {"name": "t", "offset": 1.0, "scale": 0.5})
    assert compatible(regression, _shape([{"name": "x"}], {"name": "t"}))
    assert compatible(regression, _shape([{"name": "x"}], {"name": "t", "classes": [3, 9]}))
    assert not compatible(regression, _shape([{"name": "x"}], {"name": "t", "classes": ["a"]}))
    assert not compatible(BASE, _shape([{"name": "a"}, {"name": "b"}], {"name": "y"}))


def test_ineligible_listings_get_no_offer() -> None:
    """Reputation, price cap, sample minimum, capacity, currency and exclusions all filter."""
    supplies = [
        supply(0, reputation=0.1),
        supply(1, ask_cents=51),
        supply(2, samples=99),
        supply(3, free_capacity=0),
        supply(4, currency="eur"),
        supply(5, provider_id="excluded"),
        supply(6),
    ]
    got = match([demand(min_reputation=0.3, excluded_providers=frozenset({"excluded"}))], supplies)
    assert [p.listing_id for p in got] == ["l6"]


def test_highest_value_first_then_cheaper() -> None:
    """Value is min(samples, cap) x reputation; ties go to the lower ask."""
    supplies = [
        supply(0, samples=9000, reputation=0.5),  # capped at 5000 -> 2500
        supply(1, samples=4000, reputation=0.9),  # 3600
        supply(2, samples=5000, reputation=0.5, ask_cents=20),  # 2500, dearer
        supply(3, samples=200, reputation=0.9),  # 180
    ]
    got = match([demand(slots=3)], supplies)
    assert [p.listing_id for p in got] == ["l1", "l0", "l2"]
    assert got[1].samples == 5000


def test_budget_is_respected() -> None:
    """Total ask x rounds of the chosen providers never exceeds the remaining budget."""
    supplies = [supply(i, ask_cents=40) for i in range(5)]
    got = match([demand(slots=5, budget_left_cents=200)], supplies)
    assert len(got) == 2  # 2 x 40 x 2 rounds = 160; a third would be 240


def test_one_listing_per_provider_and_capacity_shared_across_jobs() -> None:
    """A provider gets one offer per job; a listing's capacity is used once per slot."""
    supplies = [supply(0, provider_id="p", samples=5000), supply(1, provider_id="p")]
    got = match([demand(job_id="j1"), demand(job_id="j2"), demand(job_id="j3")], supplies)
    assert [(p.job_id, p.listing_id) for p in got] == [("j1", "l0"), ("j2", "l1")]


@settings(max_examples=60, deadline=None)
@given(
    asks=st.lists(st.integers(0, 100), min_size=1, max_size=30),
    caps=st.lists(st.integers(0, 3), min_size=1, max_size=30),
    budgets=st.lists(st.integers(0, 2000), min_size=1, max_size=5),
    slots=st.integers(1, 10),
)
def test_invariants_hold_for_random_markets(
    asks: list[int], caps: list[int], budgets: list[int], slots: int
) -> None:
    """Whatever the market, no capacity, budget, slot or price cap is ever exceeded."""
    supplies = [
        supply(i, provider_id=f"p{i % 7}", ask_cents=a, free_capacity=caps[i % len(caps)])
        for i, a in enumerate(asks)
    ]
    demands = [
        demand(job_id=f"j{k}", budget_left_cents=b, slots=slots) for k, b in enumerate(budgets)
    ]
    got = match(demands, supplies)
    per_listing = Counter(p.listing_id for p in got)
    capacity = {s.listing_id: s.free_capacity for s in supplies}
    assert all(n <= capacity[lid] for lid, n in per_listing.items())
    for d in demands:
        mine = [p for p in got if p.job_id == d.job_id]
        assert len(mine) <= d.slots
        assert len({p.provider_id for p in mine}) == len(mine)
        assert sum(p.price_cents * p.rounds for p in mine) <= d.budget_left_cents
        assert all(p.price_cents <= d.price_cap_cents for p in mine)


def test_unverified_providers_are_never_matched() -> None:
    """Only verified providers get offers (so only they can be in a quorum); the demand's
    `require_verified=False` (the setting switched off) matches everyone."""
    supplies = [supply(0, verified=False), supply(1)]
    assert [p.provider_id for p in match([demand()], supplies)] == ["p1"]
    report = explain(demand(), supplies)
    assert report.excluded == {"provider not verified (by Stripe Connect or an operator)": 1}
    everyone = match([demand(require_verified=False)], supplies)
    assert sorted(p.provider_id for p in everyone) == ["p0", "p1"]
