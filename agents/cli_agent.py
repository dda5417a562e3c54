"""`pollen agent run`: the provider agent's command (`agent_app`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    retrying,
    say_as,
    setup_logging,
)
from agents.data import DataError

if TYPE_CHECKING:
    from agents.client import Backoff
    from agents.privacy import DPConfig, PrivacyPolicy
    from agents.state import StateFile
    from agents.tabular import Table

agent_app = typer.Typer(help="The provider agent.", no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option(help="Local dataset: CSV, .npz or Parquet.")]
LabelOpt = Annotated[str, typer.Option(help="Label column.")]
ProviderKeyOpt = Annotated[
    str, typer.Option(envvar="POLLEN_API_KEY", help="Provider API key; registers if empty.")
]
NameOpt = Annotated[str, typer.Option(help="Account and listing name.")]
StateDirOpt = Annotated[Path, typer.Option(help="Local state (resume after a crash).")]
AskOpt = Annotated[int, typer.Option(help="Ask price per round, in cents.")]
CurrencyOpt = Annotated[str, typer.Option(help="Currency of the ask.")]
MinPriceOpt = Annotated[int, typer.Option(help="Decline offers paying less.")]
MaxJobsOpt = Annotated[int, typer.Option(help="Most jobs at once.")]
ClassesOpt = Annotated[str | None, typer.Option(help="Label classes to declare, e.g. 0-9 or 0,1.")]
MaxEpsilonOpt = Annotated[
    float,
    typer.Option(
        help="Record-level DP (DP-SGD, on by default): the most ε any job may cost this "
        "provider; offers asking more, or asking for no DP, are declined."
    ),
]
NoDpOpt = Annotated[
    bool,
    typer.Option(
        "--no-dp", help="Opt out of record-level DP (a job that asks for DP still gets it)."
    ),
]
RecordClipOpt = Annotated[float, typer.Option(help="DP-SGD: per-example gradient clip norm.")]
UpdateClipOpt = Annotated[
    float | None, typer.Option(help="Update-level DP too: clip updates to this L2 norm.")
]
NoiseOpt = Annotated[float, typer.Option(help="Update-level DP: noise multiplier σ.")]
DeltaOpt = Annotated[float, typer.Option(help="DP: δ for ε accounting.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for local training.")]
PollOpt = Annotated[float, typer.Option(help="Seconds between polls.")]
ExitAfterOpt = Annotated[int | None, typer.Option(help="Exit after this many jobs ended.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v")]
TrustBuyerOpt = Annotated[
    str | None,
    typer.Option(
        help="Work only for the buyer with this identity fingerprint (else pinned on first sight)."
    ),
]


@agent_app.command("run")
@friendly
def agent_run(
    data: DataOpt,
    label: LabelOpt = "label",
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ProviderKeyOpt = "",
    name: NameOpt = "provider",
    state_dir: StateDirOpt = Path(".pollen-agent"),
    ask_cents: AskOpt = 100,
    currency: CurrencyOpt = "usd",
    min_price_cents: MinPriceOpt = 0,
    max_jobs: MaxJobsOpt = 1,
    classes: ClassesOpt = None,
    max_epsilon: MaxEpsilonOpt = 8.0,
    no_dp: NoDpOpt = False,
    dp_record_clip: RecordClipOpt = 1.0,
    dp_clip: UpdateClipOpt = None,
    dp_noise: NoiseOpt = 1.0,
    dp_delta: DeltaOpt = 1e-5,
    seed: SeedOpt = 0,
    poll: PollOpt = 1.0,
    exit_after_jobs: ExitAfterOpt = None,
    retry_for: RetryForOpt = 300.0,
    max_retry_wait: MaxRetryWaitOpt = 10.0,
    no_progress: NoProgressOpt = False,
    verbose: VerboseOpt = False,
    trust_buyer: TrustBuyerOpt = None,
) -> None:
    """Run a provider agent: publish a listing, accept offers, train and submit encrypted.

    Shows each round's training epochs, encryption and upload (bars on a terminal, a line
    per event otherwise)."""
    import torch

    from agents.client import PollenClient
    from agents.progress import agent_progress
    from agents.provider import AgentPolicy, ProviderAgent
    from agents.state import StateFile
    from crypto.identity import IdentityKey

    setup_logging(verbose)
    torch.set_num_threads(1)
    dataset = _read_dataset(data, label)
    state = StateFile(state_dir / "agent-state.json")
    say = functools.partial(say_as, name)
    backoff = retrying(retry_for, poll, max_retry_wait, say)
    key = api_key or state.get("api_key") or _register(server, name, state, backoff, say)
    privacy, dp = _privacy(no_dp, max_epsilon, dp_delta, dp_record_clip, dp_clip, dp_noise)
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


def _read_dataset(data: Path, label: str) -> Table:
    from agents.tabular import read_table

    dataset = read_table(data)
    if label not in dataset.columns:
        raise DataError(f"{data}: no label column {label!r} (--label); columns are {dataset.names}")
    return dataset


def _register(
    server: str, name: str, state: StateFile, backoff: Backoff, say: Callable[[str], None]
) -> str:
    """A new provider account; its key and id are saved in the agent's state."""
    from agents.client import PollenClient, never_sent

    # Retried only while no connection can be made: a registration whose answer was
    # lost would leave an orphan account.
    anon = PollenClient(server, None)
    created = backoff.call_if(never_sent, anon.register, role="provider", name=name)
    state.data.update(api_key=created.api_key, account_id=created.id)
    state.save()
    say(f"registered provider account {created.id}")
    return created.api_key


def _privacy(
    no_dp: bool,
    max_epsilon: float,
    delta: float,
    record_clip: float,
    update_clip: float | None,
    noise: float,
) -> tuple[PrivacyPolicy, DPConfig | None]:
    """Record-level DP unless `--no-dp`; update-level DP too when `--dp-clip` is given."""
    from agents.privacy import DPConfig, PrivacyPolicy

    privacy = PrivacyPolicy(
        max_epsilon=None if no_dp else max_epsilon, delta=delta, clip=record_clip
    )
    dp = None
    if update_clip:
        dp = DPConfig(clip=update_clip, noise_multiplier=noise, delta=delta)
    return privacy, dp
