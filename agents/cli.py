"""`pollen`: the command line of the marketplace, for buyers, providers and operators.

pollen server                 run the marketplace
pollen keys init              create the buyer's CKKS key pair
pollen account register       create a buyer or provider account (prints its API key)
pollen job post SPEC.yaml     post a training job (uploads public context + model, funds)
pollen job run JOB            drive a job round by round (decrypts only the sums)
pollen job status JOB         show a job's rounds and metrics
pollen agent run --data FILE  run a provider agent on local data
pollen demo                   the whole marketplace on this machine, end to end

The commands live in modules by audience: `cli_job` (buyer), `cli_agent` (provider),
`cli_admin` (operator), `cli_data`, `cli_money` and `cli_trust`; `cli_base` holds what they
share. This module assembles the `pollen` app (the console script `agents.cli:app`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agents.cli_admin import admin_app
from agents.cli_agent import agent_app
from agents.cli_base import (
    DEFAULT_KEYS,
    DEFAULT_SERVER,
    ApiKeyOpt,
    KeysOpt,
    ServerOpt,
    api_client,
    console,
    friendly,
)
from agents.cli_job import job_app

app = typer.Typer(
    help="Pollen: a marketplace for private model training with CKKS-encrypted updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="The buyer's CKKS key pair.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(job_app, name="job")
app.add_typer(agent_app, name="agent")
app.add_typer(account_app, name="account")
app.add_typer(admin_app, name="admin")


# ---------------------------------------------------------------------------- server


@app.command()
def server(
    data_dir: Annotated[Path, typer.Option(help="Folder for the SQLite file and blobs.")] = Path(
        ".pollen"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (e.g. PostgreSQL) instead of SQLite.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes. More than 1 needs PostgreSQL (--database-url): SQLite "
            "serves one process. The database is migrated once, before the workers start.",
        ),
    ] = 1,
) -> None:
    """Run the marketplace service under uvicorn (API docs at /docs)."""
    from market.server import serve

    serve(data_dir=str(data_dir), host=host, port=port, database_url=database_url, workers=workers)


# ---------------------------------------------------------------------------- keys


@keys_app.command("init")
@friendly
def keys_init(
    keys: KeysOpt = DEFAULT_KEYS,
    preset: Annotated[str, typer.Option(help="CKKS parameter preset.")] = "ckks-add-2048-v1",
) -> None:
    """Create the buyer's CKKS key pair; the secret key stays in KEYS (mode 0600)."""
    from agents.cli_trust import identity_path
    from crypto import BuyerKeys
    from crypto.identity import IdentityKey

    pair = BuyerKeys.generate(preset)
    pair.save(keys)
    console.print(f"secret key written to [bold]{escape(str(keys))}[/bold] (mode 0600, never sent)")
    console.print(f"public fingerprint {pair.fingerprint}")
    identity = IdentityKey.load_or_create(identity_path(keys))
    console.print(f"identity key {identity_path(keys)} (mode 0600)")
    console.print(
        f"identity fingerprint [bold]{identity.fingerprint}[/bold] (give it to providers)"
    )


@keys_app.command("show")
@friendly
def keys_show(keys: KeysOpt = DEFAULT_KEYS) -> None:
    """Print the preset and public fingerprint of a key file."""
    from crypto import BuyerKeys

    pair = BuyerKeys.load(keys)
    console.print(f"preset {pair.preset.id}\nfingerprint {pair.fingerprint}")


# ---------------------------------------------------------------------------- accounts


@account_app.command("register")
@friendly
def account_register(
    role: Annotated[str, typer.Option(help="buyer or provider.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    server: ServerOpt = DEFAULT_SERVER,
) -> None:
    """Create an account; its API key is printed once and stored only hashed."""
    from agents.client import PollenClient

    created = PollenClient(server, None).register(role=role, name=name)
    console.print(f"account {escape(created.id)} ({escape(created.role)})")
    console.print(f"API key (shown once): [bold]{created.api_key}[/bold]")
    if created.role == "provider":
        console.print(
            "not verified yet: you are matched to jobs once an operator approves you "
            "(`pollen admin approve-provider`) or, on the Stripe rail, once your Connect "
            "account can receive payouts (`pollen account connect`)"
        )


@account_app.command("connect")
@friendly
def account_connect(server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "") -> None:
    """Provider, Stripe rail: create your Connect account, or check it again after Stripe's
    onboarding; you are verified (matched, counted in quorums) while it can receive payouts."""
    acct = api_client(server, api_key).connect()
    if acct.verified_at:
        console.print(f"verified ({escape(str(acct.verified_by))}): you are matched to jobs")
    else:
        console.print("not verified yet: finish Stripe's onboarding, then run this again")


# ---------------------------------------------------------------------------- demo


@app.command()
def demo(
    providers: Annotated[int, typer.Option(help="Provider agents to run.")] = 4,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 10,
    data_dir: Annotated[Path, typer.Option(help="Demo state folder (wiped first).")] = Path(
        ".pollen-demo"
    ),
    keep_serving: Annotated[
        bool, typer.Option(help="Keep the server and its dashboard (/ui) up until Ctrl-C.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port for the demo server (0: any free).")] = 0,
) -> None:
    """Run the whole marketplace on this machine: server, agents on private data, a buyer."""
    from agents.demo import run_demo

    code = run_demo(
        providers=providers,
        rounds=rounds,
        data_dir=data_dir,
        keep_serving=keep_serving,
        port=port,
        console=console,
    )
    raise typer.Exit(code)


# Money and reputation review commands (payouts, reputation, ledger verify, job receipt).
from agents.cli_money import register as _register_money  # noqa: E402

_register_money(app, job_app)

# Data and model commands (job init, job cancel, job model, model predict).
from agents.cli_data import register as _register_data  # noqa: E402

_register_data(app, job_app, friendly)

from agents.cli_trust import register as _register_trust  # noqa: E402

_register_trust(app)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
