"""The money side of `pollen demo`: the payment rail it runs on, funding the job, and the
settlement report printed at the end.

Rail: the demo starts **localstripe** (PyPI) on a free loopback port and runs the server on
the `stripe` rail: the buyer funds the job with a PaymentIntent confirmed with the test card
`pm_card_visa`, the server learns of it from localstripe's signed webhook, and leftover escrow
would go back as a Stripe Refund. Payouts leave as a **CSV batch** that the demo's operator
marks paid: localstripe has no Connect, and the Connect double is a test fixture under
`tests/`, not something `make demo` should depend on. If localstripe cannot start, the demo
falls back to the `manual` rail (an operator credit) and says so.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from agents.cli_money import (
    ledger_line,
    money,
    payouts_table,
    receipt_table,
    reputation_table,
)
from agents.client import PollenClient
from agents.stripe_pay import confirm_card_payment
from dataspec.states import JobState
from dataspec.views import JobFunding

STRIPE_KEY = "sk_test_pollen_demo"
WEBHOOK_SECRET = "whsec_pollen_demo"


@dataclass
class Rail:
    name: str
    env: dict[str, str]
    stripe_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


def start_rail(data_dir: Path, port: int, console: Console) -> Rail:
    """localstripe on `port` and the server settings for it; the manual rail if it fails."""
    url = f"http://127.0.0.1:{port}"
    log = (data_dir / "localstripe.log").open("ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        console.print(
            f"[yellow]localstripe did not start ({escape(str(exc))}); manual rail[/yellow]"
        )
        return Rail("manual", {})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/v1/customers", timeout=1, auth=(STRIPE_KEY, ""))
            env = {
                "POLLEN_STRIPE_API_KEY": STRIPE_KEY,
                "POLLEN_STRIPE_API_BASE": url,
                "POLLEN_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            }
            return Rail("stripe", env, url, proc)
        except httpx.TransportError:
            time.sleep(0.2)
    Rail("manual", {}, None, proc).stop()
    console.print("[yellow]localstripe did not answer; falling back to the manual rail[/yellow]")
    return Rail("manual", {})


def fund(
    rail: Rail,
    server_url: str,
    buyer: PollenClient,
    admin: PollenClient,
    job: JobFunding,
    console: Console,
) -> None:
    """Fund the posted job on the rail and wait until it is open."""
    budget, currency = job.budget_cents, job.currency
    if rail.name == "manual":
        admin.credit_job(job.id, budget, reference=f"demo:{job.id}")
        console.print(f"manual rail: operator credited {money(budget, currency)}")
        return
    assert rail.stripe_url is not None
    httpx.post(
        f"{rail.stripe_url}/_config/webhooks/pollen",
        data={"url": f"{server_url}/v1/webhooks/stripe", "secret": WEBHOOK_SECRET},
    ).raise_for_status()
    pi = job.payment.external_id if job.payment is not None else None
    assert pi is not None, "the stripe rail answers funding with a PaymentIntent"
    status = confirm_card_payment(pi, api_key=STRIPE_KEY, api_base=rail.stripe_url)
    deadline = time.monotonic() + 30
    while buyer.get_job(job.id).state == JobState.FUNDING:
        if time.monotonic() > deadline:
            buyer.fund_job(job.id)  # no webhook yet: poll the PaymentIntent instead
        time.sleep(0.2)
    console.print(
        f"stripe rail (localstripe {rail.stripe_url}): PaymentIntent {pi} {status}, "
        f"{money(budget, currency)} in escrow after the signed webhook"
    )


def settle_and_report(
    admin: PollenClient, buyer: PollenClient, job_id: str, console: Console
) -> dict[str, Any]:
    """Pay providers, print payouts, reputation, the receipt and the ledger check."""
    batch = admin.run_payouts().batch
    if batch is not None and batch.status != "paid":
        admin.mark_payout_batch_paid(batch.id)
    reps = admin.reputations()
    names = {r.provider_id: r.name for r in reps}
    view = admin.payouts()
    console.print(payouts_table(view, names))
    if batch is not None:
        console.print(
            escape(
                f"payout batch {batch.id} ({batch.rail}, {len(batch.payouts)} lines, "
                f"{money(batch.total_cents, 'usd')}) exported as CSV and marked paid"
            )
        )
    console.print(reputation_table(reps))
    receipt = buyer.receipt(job_id)
    console.print(receipt_table(receipt, names))
    report = admin.verify_ledger()
    console.print(ledger_line(report))
    return {
        "rail": receipt.rail,
        "funded_cents": receipt.funded_cents,
        "paid_cents": receipt.paid_cents,
        "fees_cents": receipt.fees_cents,
        "refunded_cents": receipt.refunded_cents,
        "escrow_cents": receipt.escrow_cents,
        "ledger_verified": report.ok,
        "ledger_transactions": report.transactions,
        "payouts": {names.get(p["provider_id"], p["provider_id"]): p["earned_cents"]
                    for p in receipt.providers},
        "reputation": {r.name: round(r.score, 4) for r in reps},
    }  # fmt: skip
