"""`market.db.unit_of_work`: an entry point's writes commit once, together, or not at all;
a block inside another joins it; a job's lock is taken outside it, never inside."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from market import lifecycle as lc
from market.db import in_unit_of_work, make_engine, unit_of_work
from market.models import Account, LedgerTransaction, Offer
from market.services import rounds
from market.services.locks import locked_job, locked_round
from tests.utils.money import running_job, submit

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _account(name: str) -> Account:
    return Account(id=f"byr_{name}", role="buyer", name=name, key_hash=f"hash-{name}")


def _names(engine: Engine) -> set[str]:
    with Session(engine) as other:
        return set(other.exec(select(Account.name)).all())


def test_writes_commit_together_when_the_block_ends(engine: Engine) -> None:
    """Nothing is visible to another session until the block ends; then everything is."""
    with Session(engine) as session:
        with unit_of_work(session):
            session.add(_account("a"))
            session.add(_account("b"))
            session.flush()
            assert in_unit_of_work(session)
            assert _names(engine) == set()
        assert not in_unit_of_work(session)
    assert _names(engine) == {"a", "b"}


def test_an_exception_rolls_everything_back(engine: Engine) -> None:
    """A block that raises leaves no row behind, and the exception reaches the caller."""
    with Session(engine) as session:
        with pytest.raises(ValueError, match="refused"), unit_of_work(session):
            session.add(_account("a"))
            session.flush()
            raise ValueError("refused")
        assert not in_unit_of_work(session)
        with unit_of_work(session):  # the session is usable again
            session.add(_account("b"))
    assert _names(engine) == {"b"}


def test_a_block_inside_another_joins_it(engine: Engine) -> None:
    """An entry point calling another commits once, at the outer end: a failure after the
    inner block rolls back the inner block's writes too."""
    with Session(engine) as session, pytest.raises(ValueError), unit_of_work(session):
        with unit_of_work(session):
            session.add(_account("inner"))
        assert in_unit_of_work(session)
        assert _names(engine) == set()
        raise ValueError("after the inner block")
    assert _names(engine) == set()


def test_a_jobs_lock_is_refused_inside_a_unit_of_work(engine: Engine) -> None:
    """Taking the lock inside would commit the unit in two and release the lock before the
    unit's commit; it is refused before anything is written."""
    with Session(engine, expire_on_commit=False) as session:
        scn = running_job(session, now=NOW)
        with pytest.raises(RuntimeError, match="before opening"), unit_of_work(session):
            session.add(_account("late"))
            with locked_job(session, scn.job.id):
                pass
    assert "late" not in _names(engine)


def test_a_deadline_close_commits_with_its_settlement_or_not_at_all(engine: Engine) -> None:
    """A round closed at its deadline in a unit of work that then fails stays collecting and
    settles nothing; the deadline pass (`rounds.tick`) then closes and settles it whole."""
    with Session(engine, expire_on_commit=False) as session:
        scn = running_job(session, now=NOW)
        job_id = scn.job.id
        rnd = rounds.find_round(session, job_id, 1)
        assert rnd is not None
        for pid in scn.providers[:2]:
            submit(session, rnd, pid, 100, NOW)
        late, settled = rnd.deadline, _settlements(session)
        with (
            pytest.raises(ValueError),
            locked_job(session, job_id) as job,
            unit_of_work(session),
        ):
            fresh = locked_round(session, job, 1)
            assert rounds.check_round(session, job, fresh, now=late) == lc.Close("deadline")
            raise ValueError("the request fails after the decision")
        assert _round_state(engine, job_id) == "collecting"
        assert _settlements(session) == settled
        assert rounds.tick(session, now=late) == 1
    assert _round_state(engine, job_id) == "closed"
    with Session(engine) as other:
        assert _settlements(other) > settled


def _round_state(engine: Engine, job_id: str) -> str:
    with Session(engine) as other:
        rnd = rounds.find_round(other, job_id, 1)
        assert rnd is not None
        return rnd.state


def _settlements(session: Session) -> int:
    rows = session.exec(select(LedgerTransaction.id).where(LedgerTransaction.kind == "settle"))
    return len(rows.all())


def test_a_retry_in_a_failed_unit_of_work_commits_nothing(engine: Engine) -> None:
    """A round retried at its deadline in a unit of work that then fails stays on attempt 1
    with every provider still in: the retry's matching pass waits for the commit (it used
    to commit the retry half-way through the caller's unit of work). The deadline pass then
    retries it whole."""
    with Session(engine, expire_on_commit=False) as session:
        scn = running_job(session, now=NOW)
        job_id = scn.job.id
        rnd = rounds.find_round(session, job_id, 1)
        assert rnd is not None
        submit(session, rnd, scn.providers[0], 100, NOW)
        late = rnd.deadline
        with (
            pytest.raises(ValueError),
            locked_job(session, job_id) as job,
            unit_of_work(session),
        ):
            fresh = locked_round(session, job, 1)
            assert isinstance(rounds.check_round(session, job, fresh, now=late), lc.Retry)
            raise ValueError("the request fails after the decision")
        assert _attempt_and_offers(engine, job_id) == (1, ["accepted"] * 3)
        assert rounds.tick(session, now=late) == 1
    assert _attempt_and_offers(engine, job_id) == (2, ["accepted", "dropped", "dropped"])


def _attempt_and_offers(engine: Engine, job_id: str) -> tuple[int, list[str]]:
    with Session(engine) as other:
        rnd = rounds.find_round(other, job_id, 1)
        assert rnd is not None
        offers = other.exec(select(Offer).where(Offer.job_id == job_id)).all()
        return rnd.attempt, sorted(str(o.state) for o in offers)
