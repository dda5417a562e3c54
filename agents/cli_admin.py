"""`pollen admin credit | approve-provider | revoke-provider`: operator commands
(`admin_app`, admin API key)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from agents.cli_base import (
    DEFAULT_SERVER,
    ApiKeyOpt,
    ServerOpt,
    api_client,
    console,
    friendly,
)

admin_app = typer.Typer(help="Operator commands (admin API key).", no_args_is_help=True)


@admin_app.command("credit")
@friendly
def admin_credit(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    amount_cents: Annotated[int, typer.Argument(help="Amount in minor units.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Manual rail: credit a job's funding after the money arrived by other means."""
    credit = api_client(server, api_key).credit_job(job_id, amount_cents)
    console.print(f"credited {amount_cents} to {escape(job_id)}: job is {escape(credit.job_state)}")


@admin_app.command("approve-provider")
@friendly
def admin_approve_provider(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Verify a provider: only verified providers are matched and count toward quorums."""
    acct = api_client(server, api_key).approve_provider(account_id)
    console.print(
        f"provider {escape(acct.id)} ({escape(acct.name)}) verified by "
        f"{escape(str(acct.verified_by))}"
    )


@admin_app.command("revoke-provider")
@friendly
def admin_revoke_provider(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Withdraw a provider's verification: no new offers, its pending offers withdrawn."""
    acct = api_client(server, api_key).revoke_provider(account_id)
    console.print(f"provider {escape(acct.id)} ({escape(acct.name)}) is no longer verified")
