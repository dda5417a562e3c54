"""Per-round settlement, fees and refunds, through the real services on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, select

from market import ledger
from market.db import make_engine
from market.models import Payment, ReputationEvent, Round
from market.services import jobs, reputation, rounds, settlement
from tests.utils.money import running_job, submit

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine: Engine = make_engine(db_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def _round(session: Session, job_id: str, number: int) -> Round:
    rnd = rounds.find_round(session, job_id, number)
    assert rnd is not None
    return rnd


def test_split_is_exact_and_proportional() -> None:
    """Shares add up to the pool and follow the weights, the odd cents to the largest
    remainders."""
    assert settlement.split(100, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert settlement.split(1000, {"a": 3, "b": 1}) == {"a": 750, "b": 250}
    assert settlement.split(7, {"a": 0, "b": 0}) == {"a": 4, "b": 3}
    assert settlement.split(0, {"a": 5}) == {"a": 0}


@given(
    pool=st.integers(0, 10**9),
    weights=st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.integers(0, 10**7),
                            min_size=1, max_size=12),
)  # fmt: skip
def test_split_properties(pool: int, weights: dict[str, int]) -> None:
    """Any pool and weights: shares sum to the pool, each within one cent of its exact part."""
    shares = settlement.split(pool, weights)
    assert sum(shares.values()) == pool and shares.keys() == weights.keys()
    total = sum(weights.values())
    for pid, w in weights.items():
        exact = pool * w / total if total else pool / len(weights)
        assert exact - 1 < shares[pid] < exact + 1


def test_round_pool_fee_and_equal_shares_before_any_score(session: Session) -> None:
    """A closed round pays (budget − 5%) / rounds, and the platform its fee share; with no
    contribution score yet every included provider gets the equal share, whatever number
    of samples it claims (a claim nobody can check never moves money)."""
    mj = running_job(session, now=NOW, providers=3, rounds=3, budget=10_000)
    rnd = _round(session, mj.job.id, 1)
    for pid, n in zip(mj.providers, (100, 5000, 100), strict=True):
        submit(session, rnd, pid, n, NOW)
    rounds.check_round(session, mj.job, rnd, now=NOW)
    assert rnd.state == "closed"
    payables = {p: ledger.balance(session, ledger.provider_payable(p), "usd") for p in mj.providers}
    # fee 500, pool per round (10_000 − 500) // 3 = 3166, split three ways: 1055.33 each,
    # the odd cent to the smallest provider id.
    assert sorted(payables.values()) == [1055, 1055, 1056]
    assert payables[min(mj.providers)] == 1056
    assert sum(payables.values()) == 3166
    assert ledger.job_totals(session, mj.job.id) == {
        "funded": 10_000, "paid": 3166, "fees": 166, "refunded": 0, "escrow": 10_000 - 3332,
    }  # fmt: skip


def test_late_provider_gets_nothing_and_loses_reputation(session: Session) -> None:
    """At the deadline with quorum, the provider that did not submit is paid nothing and
    gets a missed-deadline event."""
    mj = running_job(session, now=NOW, providers=3, rounds=2)
    rnd = _round(session, mj.job.id, 1)
    submit(session, rnd, mj.providers[0], 100, NOW)
    submit(session, rnd, mj.providers[1], 100, NOW)
    later = NOW + timedelta(seconds=61)
    rounds.tick(session, now=later)
    assert _round(session, mj.job.id, 1).state == "closed"
    late = mj.providers[2]
    assert ledger.balance(session, ledger.provider_payable(late), "usd") == 0
    assert ledger.balance(session, ledger.provider_payable(mj.providers[0]), "usd") == 2375
    kinds = session.exec(select(ReputationEvent.kind).where(ReputationEvent.provider_id == late))
    assert list(kinds) == ["missed-deadline"]
    scores = reputation.scores(session, mj.providers, now=later)
    assert scores[late] < 0.5 < scores[mj.providers[0]]


def test_cancel_refunds_the_unspent_escrow(session: Session) -> None:
    """Cancelling after one round refunds everything not yet paid out, to the cent."""
    mj = running_job(session, now=NOW, providers=2, rounds=4, budget=10_001)
    rnd = _round(session, mj.job.id, 1)
    for pid in mj.providers:
        submit(session, rnd, pid, 50, NOW)
    rounds.check_round(session, mj.job, rnd, now=NOW)
    jobs.cancel_job(session, mj.job, now=NOW)
    t = ledger.job_totals(session, mj.job.id)
    assert t["escrow"] == 0 and t["funded"] == 10_001
    assert t["refunded"] == 10_001 - t["paid"] - t["fees"] == 10_001 - 2375 - 125
    refund = session.exec(select(Payment).where(Payment.kind == "refund")).one()
    assert (refund.amount_cents, refund.status) == (t["refunded"], "recorded")
    assert ledger.verify(session).ok


def test_failed_job_refunds_and_completed_job_refunds_overfunding(session: Session) -> None:
    """A failed job refunds its escrow; a completed one refunds only what exceeded the budget."""
    failed = running_job(session, now=NOW, providers=2, rounds=2)
    rounds.fail_job(session, failed.job, _round(session, failed.job.id, 1), now=NOW, reason="x")
    assert ledger.job_totals(session, failed.job.id)["refunded"] == 10_000

    mj = running_job(session, now=NOW, providers=2, rounds=1, budget=1000, funded=1234)
    rnd = _round(session, mj.job.id, 1)
    for pid in mj.providers:
        submit(session, rnd, pid, 10, NOW)
    rounds.check_round(session, mj.job, rnd, now=NOW)
    jobs.complete_job(session, mj.job, now=NOW)
    assert ledger.job_totals(session, mj.job.id) == {
        "funded": 1234, "paid": 950, "fees": 50, "refunded": 234, "escrow": 0,
    }  # fmt: skip
    assert ledger.verify(session).ok


def test_settlement_replay_changes_nothing(session: Session) -> None:
    """Settling the same round again (a crash and retry) posts nothing new."""
    mj = running_job(session, now=NOW, providers=2, rounds=2)
    rnd = _round(session, mj.job.id, 1)
    for pid in mj.providers:
        submit(session, rnd, pid, 10, NOW)
    rounds.check_round(session, mj.job, rnd, now=NOW)
    before = ledger.verify(session)
    settlement.on_round_closed(session, mj.job, rnd, now=NOW + timedelta(seconds=5))
    session.commit()
    after = ledger.verify(session)
    assert (after.transactions, after.head_hash) == (before.transactions, before.head_hash)
