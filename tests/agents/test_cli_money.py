"""`pollen payouts`, `reputation`, `ledger verify` and `job receipt` against a live server."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from agents.cli import app
from dataspec.views import JobPublic, MatchingPublic
from market import Settings, create_app
from market.models.types import utcnow
from market.services import jobs, rounds
from tests.utils.factories import ADMIN_KEY, SCHEMA
from tests.utils.money import running_job, submit
from tests.utils.stripe_env import serve_in_thread
from tests.utils.views import job_view, matching_view

runner = CliRunner()


@dataclass
class Live:
    url: str
    job_id: str
    providers: list[str]
    db: Path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A server with one completed, settled 1-round job (two providers)."""
    settings = Settings(data_dir=tmp_path / "d", admin_api_key=ADMIN_KEY, deadline_tick_s=0)
    web = create_app(settings)
    with serve_in_thread(web) as url:
        now = utcnow()
        with Session(web.state.engine, expire_on_commit=False) as s:
            mj = running_job(s, now=now, providers=2, rounds=1, budget=10_000)
            rnd = rounds.find_round(s, mj.job.id, 1)
            assert rnd is not None
            submit(s, rnd, mj.providers[0], 300, now)
            submit(s, rnd, mj.providers[1], 100, now)
            rounds.check_round(s, mj.job, rnd, now=now + timedelta(seconds=1))
            jobs.complete_job(s, mj.job, now=now)
        yield Live(url, mj.job.id, mj.providers, tmp_path / "d" / "pollen.db")


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_receipt_and_ledger_verify(live: Live) -> None:
    """The receipt shows where the money went; `ledger verify` says the chain is intact."""
    code, out = _run("job", "receipt", live.job_id, "--server", live.url, "--api-key", ADMIN_KEY)
    assert code == 0, out
    assert "100.00 USD" in out and "95.00 USD" in out and "5.00 USD" in out and "yes" in out
    code, out = _run("ledger", "verify", "--server", live.url)
    assert code == 0 and "ledger verified" in out and "hash chain intact" in out


def test_payouts_and_reputation(live: Live) -> None:
    """An admin runs payouts (CSV batch); reputation lists scores and reasons publicly."""
    code, out = _run("payouts", "--run", "--server", live.url, "--api-key", ADMIN_KEY)
    assert code == 0, out
    assert "payout_id,provider_id,job_id,amount_cents,currency" in out
    # 95.00 split evenly: no contribution score yet, and the claimed 300 vs 100 samples
    # move no money.
    assert out.count("47.50 USD") >= 2
    code, out = _run("reputation", "--server", live.url)
    assert code == 0 and "p0" in out and "0.8" in out
    code, out = _run("reputation", live.providers[1], "--server", live.url)
    assert code == 0 and "included" in out and "job-completed" in out


def test_ledger_verify_fails_on_a_rewritten_posting(live: Live) -> None:
    """A posting rewritten behind the database's back makes `ledger verify` exit 1 and name
    the transaction."""
    conn = sqlite3.connect(live.db)
    conn.execute("DROP TRIGGER ledger_posting_no_update")
    conn.execute("UPDATE ledger_posting SET amount = amount + 100 WHERE position = 1")
    conn.commit()
    conn.close()
    code, out = _run("ledger", "verify", "--server", live.url)
    assert code == 1 and "first broken link" in out and "#1" in out


HOSTILE = "[link=https://evil.example/pay]clinic-3[/link][bold red]VERIFIED"


def _rendered(renderable: object) -> str:
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        out = Console(record=True, width=400, file=sink)
        segments = list(out.render(renderable))  # type: ignore[arg-type]
        assert not [s.text for s in segments if s.style is not None and s.style.link]
        out.print(renderable)  # type: ignore[arg-type]
        return out.export_text()


def test_user_supplied_text_is_never_rich_markup() -> None:
    """Names, reasons and ids from the server print literally: no hidden hyperlink, no style.

    Issue 11: a provider named `[link=…]clinic-3[/link]` became a hidden hyperlink in
    every table that listed it (payouts, reputation, receipt, history).
    """
    from agents import cli_money
    from dataspec.money import LedgerReport, PayoutsView, Receipt, ReputationPublic

    at = "2026-01-01T00:00:00Z"
    pay = {"provider_id": "prv_1", "name": HOSTILE, "earned_cents": 100, "rounds": 1}
    payout = {
        "id": HOSTILE,
        "batch_id": "pb_1",
        "provider_id": HOSTILE,
        "job_id": "job_1",
        "amount_cents": 1,
        "currency": "usd",
        "status": HOSTILE,
        "external_id": None,
        "created_at": at,
        "paid_at": None,
    }
    earning = {
        "currency": "usd",
        "earned_cents": 1,
        "paid_cents": 0,
        "balance_cents": 1,
        "jobs": [],
    }
    event = {
        "at": at,
        "kind": HOSTILE,
        "weight": 1.0,
        "job_id": None,
        "round": None,
        "reason": HOSTILE,
    }
    rep = {
        "name": HOSTILE,
        "provider_id": "prv_1",
        "score": 0.5,
        "alpha": 1,
        "beta": 1,
        "events": 1,
        "history": [event],
    }
    tables = [
        cli_money.payouts_table(PayoutsView.model_validate(
            {"earnings": [{**earning, "provider_id": HOSTILE, "payouts": [payout]}],
             "batches": []}
        )),
        cli_money.payouts_table(
            PayoutsView.model_validate(
                {"earnings": [{**earning, "provider_id": "prv_1", "payouts": []}], "batches": []}
            ),
            {"prv_1": HOSTILE},
        ),
        cli_money.reputation_table([ReputationPublic.model_validate(rep)]),
        cli_money.history_table(ReputationPublic.model_validate(rep)),
        cli_money.receipt_table(Receipt.model_validate(
            {"job_id": HOSTILE, "state": "completed", "rail": "manual", "currency": "usd",
             "budget_cents": 1, "funded_cents": 1, "providers": [pay], "paid_cents": 1,
             "fee_bps": 500, "fees_cents": 0, "refunded_cents": 0, "escrow_cents": 0,
             "balanced": True, "rounds": [], "payments": []}
        )),
    ]  # fmt: skip
    for table in tables:
        text = _rendered(table).replace("\n", "").replace(" ", "").replace("│", "")
        assert "[link=https://evil.example/pay]" in text, text
    broken = LedgerReport.model_validate(
        {"ok": False, "transactions": 1, "head_hash": "00" * 32, "totals": {},
         "negative_accounts": [], "broken": {"seq": 1, "txn_id": "ltx", "reason": HOSTILE}}
    )  # fmt: skip
    assert HOSTILE in _rendered(cli_money.ledger_line(broken))


def test_job_status_prints_the_title_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pollen job status` shows a job titled with markup as typed, and errors likewise."""
    from agents import cli_job
    from agents.client import ApiError

    class Stub:
        def get_job(self, job_id: str) -> JobPublic:
            if job_id == "bad":
                raise ApiError(404, "not-found", "Not found", HOSTILE, {})
            return job_view({"schema": SCHEMA, "model": {"arch": "logreg"}}, id="job_1",
                            title=HOSTILE)  # fmt: skip

        def get_privacy(self, job_id: str) -> list[object]:
            return []

        def get_matching(self, job_id: str) -> MatchingPublic:
            return matching_view(excluded=[{"listings": 1, "reason": HOSTILE}])

    monkeypatch.setattr(cli_job, "api_client", lambda *a, **k: Stub())
    code, out = _run("job", "status", "job_1", "--api-key", "k")
    assert code == 0 and "[link=https://evil.example/pay]" in out, out
    code, out = _run("job", "status", "bad", "--api-key", "k")
    assert code == 1 and "[link=https://evil.example/pay]" in out, out
