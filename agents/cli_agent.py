"""`pollen agent run`: the provider agent's command (`agent_app`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from agents.cli_base import (
    DEFAULT_SERVER,
    MaxRetryWaitOpt,
    NoProgressOpt,
    RetryForOpt,
    ServerOpt,
    console,
    friendly,
    parse_classes,
    say_as,
    setup_logging,
)
from agents.data import DataError

agent_app = typer.Typer(help="The provider agent.", no_args_is_help=True)


@agent_app.command("run")
@friendly
def agent_run(
    data: Annotated[Path, typer.Option(help="Local dataset: CSV, .npz or Parquet.")],
    label: Annotated[str, typer.Option(help="Label column.")] = "label",
    server: ServerOpt = DEFAULT_SERVER,
    api_key: Annotated[
        str, typer.Option(envvar="POLLEN_API_KEY", help="Provider API key; registers if empty.")
    ] = "",
    name: Annotated[str, typer.Option(help="Account and listing name.")] = "provider",
    state_dir: Annotated[Path, typer.Option(help="Local state (resume after a crash).")] = Path(
        ".pollen-agent"
    ),
    ask_cents: Annotated[int, typer.Option(help="Ask price per round, in cents.")] = 100,
    currency: Annotated[str, typer.Option(help="Currency of the ask.")] = "usd",
    min_price_cents: Annotated[int, typer.Option(help="Decline offers paying less.")] = 0,
    max_jobs: Annotated[int, typer.Option(help="Most jobs at once.")] = 1,
    classes: Annotated[
        str | None, typer.Option(help="Label classes to declare, e.g. 0-9 or 0,1.")
    ] = None,
    max_epsilon: Annotated[
        float,
        typer.Option(
            help="Record-level DP (DP-SGD, on by default): the most ε any job may cost this "
            "provider; offers asking more, or asking for no DP, are declined."
        ),
    ] = 8.0,
    no_dp: Annotated[
        bool,
        typer.Option(
            "--no-dp", help="Opt out of record-level DP (a job that asks for DP still gets it)."
        ),
    ] = False,
    dp_record_clip: Annotated[
        float, typer.Option(help="DP-SGD: per-example gradient clip norm.")
    ] = 1.0,
    dp_clip: Annotated[
        float | None, typer.Option(help="Update-level DP too: clip updates to this L2 norm.")
    ] = None,
    dp_noise: Annotated[float, typer.Option(help="Update-level DP: noise multiplier σ.")] = 1.0,
    dp_delta: Annotated[float, typer.Option(help="DP: δ for ε accounting.")] = 1e-5,
    seed: Annotated[int, typer.Option(help="Seed for local training.")] = 0,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    exit_after_jobs: Annotated[
        int | None, typer.Option(help="Exit after this many jobs ended.")
    ] = None,
    retry_for: RetryForOpt = 300.0,
    max_retry_wait: MaxRetryWaitOpt = 10.0,
    no_progress: NoProgressOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    trust_buyer: Annotated[
        str | None,
        typer.Option(
            help="Work only for the buyer with this identity fingerprint (else pinned "
            "on first sight)."
        ),
    ] = None,
) -> None:
    """Run a provider agent: publish a listing, accept offers, train and submit encrypted.

    Shows each round's training epochs, encryption and upload (bars on a terminal, a line
    per event otherwise)."""
    import torch

    from agents.client import Backoff, PollenClient, never_sent
    from agents.progress import agent_progress
    from agents.provider import AgentPolicy, ProviderAgent
    from agents.state import StateFile
    from agents.tabular import read_table

    setup_logging(verbose)
    torch.set_num_threads(1)
    dataset = read_table(data)
    if label not in dataset.columns:
        raise DataError(f"{data}: no label column {label!r} (--label); columns are {dataset.names}")
    state = StateFile(state_dir / "agent-state.json")
    say = functools.partial(say_as, name)
    backoff = Backoff(
        give_up_after_s=retry_for,
        first_wait_s=min(poll, max_retry_wait),
        max_wait_s=max_retry_wait,
        notify=say,
    )
    key = api_key or state.get("api_key")
    if not key:
        # Retried only while no connection can be made: a registration whose answer was
        # lost would leave an orphan account.
        anon = PollenClient(server, None)
        created = backoff.call_if(never_sent, anon.register, role="provider", name=name)
        state.data.update(api_key=created.api_key, account_id=created.id)
        state.save()
        key = created.api_key
        say(f"registered provider account {created.id}")
    from agents.privacy import DPConfig, PrivacyPolicy

    privacy = PrivacyPolicy(
        max_epsilon=None if no_dp else max_epsilon, delta=dp_delta, clip=dp_record_clip
    )
    dp = None
    if dp_clip:
        dp = DPConfig(clip=dp_clip, noise_multiplier=dp_noise, delta=dp_delta)
    from crypto.identity import IdentityKey

    identity = IdentityKey.load_or_create(state_dir / "identity.key")
    say(f"identity fingerprint {identity.fingerprint}")
    with agent_progress(console, say, live=not no_progress) as progress:
        agent = ProviderAgent(
            PollenClient(server, key),
            dataset,
            label=label,
            state_dir=state_dir,
            listing_name=name,
            ask_cents=ask_cents,
            currency=currency,
            policy=AgentPolicy(min_price_cents, max_jobs),
            privacy=privacy,
            dp=dp,
            seed=seed,
            notify=say,
            identity=identity,
            trust_buyer=trust_buyer,
            progress=progress,
        )
        backoff.call(agent.ensure_listing, classes=parse_classes(classes))
        agent.run(poll_s=poll, exit_after_jobs=exit_after_jobs, backoff=backoff)
