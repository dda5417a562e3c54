"""Property tests: any sequence of rounds, dropouts, failures, cancellations and replays
conserves money to the cent and never takes an account below zero."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from market import ledger
from market.db import make_engine
from market.models import TERMINAL_JOB_STATES, Job, Round
from market.services import jobs, rounds, settlement
from tests.utils import postgres
from tests.utils.money import running_job, submit

NOW = datetime(2026, 3, 1, tzinfo=UTC)

# One step per round: which providers submit (bitmask), and what happens next.
step = st.tuples(
    st.integers(0, 15),
    st.sampled_from(["all-in", "deadline", "cancel", "replay"]),
    st.integers(1, 6000),
)


def check_invariants(session: Session, job: Job) -> None:
    totals = ledger.job_totals(session, job.id)
    assert totals["funded"] == job.funded_cents
    assert totals["funded"] == (
        totals["paid"] + totals["fees"] + totals["refunded"] + totals["escrow"]
    )
    assert totals["paid"] + totals["fees"] <= job.budget_cents
    assert totals["escrow"] >= 0
    if job.state in TERMINAL_JOB_STATES:
        assert totals["escrow"] == 0
    if job.state == "completed":
        assert totals["paid"] + totals["fees"] == job.budget_cents
    report = ledger.verify(session)
    assert report.ok, report
    assert report.negative_accounts == []


def run_sequence(
    url: str,
    providers: int,
    n_rounds: int,
    budget: int,
    fee_bps: int,
    extra: int,
    steps: list[tuple[int, str, int]],
) -> None:
    engine = make_engine(url)
    now = NOW
    with Session(engine, expire_on_commit=False) as s:
        mj = running_job(
            s, now=now, providers=providers, rounds=n_rounds, budget=budget,
            fee_bps=fee_bps, funded=budget + extra,
        )  # fmt: skip
        job = mj.job
        check_invariants(s, job)
        for mask, action, samples in steps:
            if job.state in TERMINAL_JOB_STATES:
                break
            rnd = rounds.find_round(s, job.id, job.current_round)
            assert rnd is not None
            if action == "cancel":
                jobs.cancel_job(s, job, now=now)
            elif action == "replay":
                before = ledger.verify(s).head_hash
                closed = s.get(Round, rnd.id)
                assert closed is not None
                if closed.state == "closed":
                    settlement.on_round_closed(s, job, closed, now=now)
                settlement.close_out(s, job, rail="manual", now=now)
                s.commit()
                assert ledger.verify(s).head_hash == before
            else:
                expected = list(rnd.expected)
                done = set(rounds.submitters(s, rnd))
                for i, pid in enumerate(expected):
                    if mask >> i & 1 and pid not in done:
                        submit(s, rnd, pid, samples + i, now)
                if action == "deadline" or rnd.acc_count < len(expected):
                    now += timedelta(seconds=61)
                rounds.check_round(s, job, rnd, now=now)
                if rnd.state == "closed":
                    if rnd.number == job.rounds_total:
                        jobs.complete_job(s, job, now=now)
                    else:
                        rnd.state = "published"
                        job.current_round = rnd.number + 1
                        rounds.open_round(s, job, rnd.number + 1, "m", now=now)
            s.refresh(job)
            check_invariants(s, job)
        if job.state not in TERMINAL_JOB_STATES:
            jobs.cancel_job(s, job, now=now)
            check_invariants(s, job)
    engine.dispose()


SEQUENCES = {
    "providers": st.integers(2, 4),
    "n_rounds": st.integers(1, 4),
    "budget": st.integers(1, 10**7),
    "fee_bps": st.integers(0, 3000),
    "extra": st.integers(0, 500),
    "steps": st.lists(step, min_size=1, max_size=6),
}
SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK)
@given(**SEQUENCES)
def test_money_is_conserved(
    sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    providers: int,
    n_rounds: int,
    budget: int,
    fee_bps: int,
    extra: int,
    steps: list[tuple[int, str, int]],
) -> None:
    """funded = paid + fees + refunded + escrow after every step; terminal jobs hold no escrow;
    replays of settlement and refunds post nothing (SQLite)."""
    path = tmp_path_factory.mktemp("prop") / "p.db"
    shutil.copyfile(sqlite_template, path)
    run_sequence(f"sqlite:///{path}", providers, n_rounds, budget, fee_bps, extra, steps)


@pytest.mark.postgres
@settings(max_examples=8, deadline=None, suppress_health_check=SLOW_OK)
@given(**SEQUENCES)
def test_money_is_conserved_on_postgres(
    pg_server: str,
    pg_template: str,
    providers: int,
    n_rounds: int,
    budget: int,
    fee_bps: int,
    extra: int,
    steps: list[tuple[int, str, int]],
) -> None:
    """The same property on PostgreSQL, where the deferred balance trigger checks each commit."""
    name = f"pollen_p_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_server, name, template=pg_template)
    try:
        run_sequence(url, providers, n_rounds, budget, fee_bps, extra, steps)
    finally:
        postgres.drop_database(pg_server, name)
