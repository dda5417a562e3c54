"""`pollen payouts`, `pollen reputation`, `pollen ledger verify`, `pollen job receipt`: the
review commands for money and reputation, and the rich tables the demo prints too.

`register(app, job_app)` adds them to the main CLI (see the bottom of `agents.cli`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.client import ApiError, PollenClient
from dataspec.money import LedgerReport, PayoutsView, Receipt, ReputationPublic

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
Json = dict[str, Any]

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="POLLEN_SERVER", help="Marketplace base URL.")
]
ApiKeyOpt = Annotated[
    str,
    typer.Option("--api-key", envvar="POLLEN_API_KEY", help="Your API key (or POLLEN_API_KEY)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print raw JSON.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def money(cents: int, currency: str) -> str:
    """`12345, "usd"` → `123.45 USD` (minor units of two-decimal currencies)."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d} {currency.upper()}"


def plain(value: object) -> str:
    """Text from the server (names, reasons, ids) as rich prints it literally: a provider
    named `[link=…]` must not become a hidden hyperlink in a table."""
    return escape(str(value))


def _short(ident: str) -> str:
    return plain(ident if len(ident) <= 14 else ident[:14] + "…")


def payouts_table(view: PayoutsView, names: dict[str, str] | None = None) -> Table:
    names = names or {}
    table = Table(title="Provider payouts")
    for col in ("provider", "earned", "paid out", "owed", "jobs", "payouts"):
        table.add_column(col, justify="left" if col == "provider" else "right")
    for e in view.earnings:
        cur = e.currency
        table.add_row(
            plain(names.get(e.provider_id, e.provider_id)),
            money(e.earned_cents, cur),
            money(e.paid_cents, cur),
            money(e.balance_cents, cur),
            str(len(e.jobs)),
            ", ".join(f"{_short(p.external_id or p.id)} {plain(p.status)}" for p in e.payouts)
            or "-",
        )
    return table


def reputation_table(reps: list[ReputationPublic]) -> Table:
    table = Table(title="Reputation (Beta, decayed)")
    for col in ("provider", "score", "α", "β", "events", "latest reason"):
        table.add_column(col, justify="left" if col in ("provider", "latest reason") else "right")
    for r in sorted(reps, key=lambda r: -r.score):
        latest = plain(r.history[0].reason) if r.history else "-"
        table.add_row(
            f"{plain(r.name)} ({_short(r.provider_id)})",
            f"{r.score:.3f}",
            f"{r.alpha:.2f}",
            f"{r.beta:.2f}",
            str(r.events),
            latest,
        )
    return table


def history_table(rep: ReputationPublic) -> Table:
    table = Table(title=f"{plain(rep.name)}: score {rep.score:.3f}")
    for col in ("at", "event", "weight", "job", "round", "reason"):
        table.add_column(col)
    for e in rep.history:
        table.add_row(
            plain(e.at.isoformat()[:19]), plain(e.kind), f"{e.weight:+g}",
            _short(e.job_id or "-"), str(e.round or "-"), plain(e.reason),
        )  # fmt: skip
    return table


def receipt_table(rec: Receipt, names: dict[str, str] | None = None) -> Table:
    names = names or {}
    cur = rec.currency
    table = Table(
        title=f"Receipt for job {plain(rec.job_id)} ({plain(rec.state)}, {plain(rec.rail)} rail)"
    )
    table.add_column("line")
    table.add_column("amount", justify="right")
    table.add_row("budget", money(rec.budget_cents, cur))
    table.add_row("[bold]funded[/bold]", money(rec.funded_cents, cur))
    for p in rec.providers:
        label = plain(names.get(p["provider_id"], p["name"]))
        table.add_row(f"  paid to {label} ({p['rounds']} rounds)", money(p["earned_cents"], cur))
    table.add_row("paid to providers", money(rec.paid_cents, cur))
    table.add_row(f"platform fees ({rec.fee_bps / 100:g}%)", money(rec.fees_cents, cur))
    table.add_row("refunded", money(rec.refunded_cents, cur))
    table.add_row("still in escrow", money(rec.escrow_cents, cur))
    table.add_row("adds up", "yes" if rec.balanced else "[red]NO[/red]")
    return table


def ledger_line(report: LedgerReport) -> str:
    if report.ok:
        return (
            f"ledger verified: {report.transactions} transactions, hash chain intact "
            f"(head {report.head_hash[:16]}…), balances add up"
        )
    broken = report.broken
    where = (
        f"first broken link: #{broken.seq} {plain(broken.txn_id)}: {plain(broken.reason)}"
        if broken
        else f"negative accounts: {plain(', '.join(report.negative_accounts))}"
    )
    return f"[red]ledger verification FAILED[/red]: {where}"


def _friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ApiError, ValueError) as exc:
            err_console.print(f"[red]error:[/red] {plain(exc)}")
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def _client(server: str, api_key: str, *, required: bool = True) -> PollenClient:
    if required and not api_key:
        raise ValueError("no API key: pass --api-key or set POLLEN_API_KEY")
    return PollenClient(server, api_key or None)


@_friendly
def payouts(
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    run: Annotated[bool, typer.Option("--run", help="Admin: pay what is owed now.")] = False,
    mark_paid: Annotated[
        str, typer.Option("--mark-paid", help="Admin: a manual batch id that was paid.")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """A provider's balance, payouts and per-job earnings; an admin sees every provider."""
    client = _client(server, api_key)
    if run:
        batch = client.run_payouts().batch
        console.print(
            f"payout batch: {plain(batch.id)} ({plain(batch.status)})" if batch else "nothing owed"
        )
        if batch and batch.csv and batch.rail == "manual":
            console.print(plain(batch.csv), end="")
    if mark_paid:
        status = client.mark_payout_batch_paid(mark_paid).status
        console.print(f"batch {plain(mark_paid)}: {plain(status)}")
    view = client.payouts()
    if as_json:
        console.print_json(view.model_dump_json())
        return
    console.print(payouts_table(view))
    for e in view.earnings:
        for j in e.jobs:
            console.print(
                f"  {plain(e.provider_id)} job {plain(j['job_id'])}: earned "
                f"{money(j['earned_cents'], e.currency)} over {j['rounds']} rounds, "
                f"owed {money(j['owed_cents'], e.currency)}"
            )


@_friendly
def reputation(
    provider: Annotated[str, typer.Argument(metavar="[PROVIDER]")] = "",
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Public reputation: every provider's score, or one provider's history with reasons."""
    client = _client(server, "", required=False)
    if provider:
        one = client.reputation(provider)
        if as_json:
            console.print_json(one.model_dump_json())
        else:
            console.print(history_table(one))
        return
    every = client.reputations()
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in every]))
    else:
        console.print(reputation_table(every))


@_friendly
def ledger_verify(
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False
) -> None:
    """Recompute the ledger's hash chain and balances; exit 1 if anything is broken."""
    report = _client(server, api_key, required=False).verify_ledger()
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        console.print(ledger_line(report))
        for currency, t in report.totals.items():
            console.print(
                "  "
                + ", ".join(f"{k} {money(v, currency)}" for k, v in t.items() if k != "balanced")
            )
    if not report.ok:
        raise typer.Exit(1)


@_friendly
def job_receipt(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The buyer's receipt: funded, paid to each provider, fees, refunded."""
    rec = _client(server, api_key).receipt(job_id)
    if as_json:
        console.print_json(rec.model_dump_json())
    else:
        console.print(receipt_table(rec))


def register(app: typer.Typer, job_app: typer.Typer) -> None:
    """Add the commands to the `pollen` CLI."""
    ledger_app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
    ledger_app.command("verify")(ledger_verify)
    app.add_typer(ledger_app, name="ledger")
    app.command("payouts")(payouts)
    app.command("reputation")(reputation)
    job_app.command("receipt")(job_receipt)
