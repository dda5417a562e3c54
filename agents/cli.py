"""`pollen`: the command line of the marketplace, for buyers, providers and operators.

pollen server                 run the marketplace
pollen keys init              create the buyer's CKKS key pair
pollen account register       create a buyer or provider account (prints its API key)
pollen job post SPEC.yaml     post a training job (uploads public context + model, funds)
pollen job run JOB            drive a job round by round (decrypts only the sums)
pollen job status JOB         show a job's rounds and metrics
pollen agent run --data FILE  run a provider agent on local data
pollen demo                   the whole marketplace on this machine, end to end
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.data import DataError

# Soft wrap: a message stays one line in a log or a pipe (rich would cut it at 80 columns).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help="Pollen: a marketplace for private model training with CKKS-encrypted updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="The buyer's CKKS key pair.", no_args_is_help=True)
job_app = typer.Typer(help="Post, run and inspect training jobs (buyer).", no_args_is_help=True)
agent_app = typer.Typer(help="The provider agent.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and API keys.", no_args_is_help=True)
admin_app = typer.Typer(help="Operator commands (admin API key).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(job_app, name="job")
app.add_typer(agent_app, name="agent")
app.add_typer(account_app, name="account")
app.add_typer(admin_app, name="admin")

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_KEYS = Path.home() / ".pollen" / "buyer.key"

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="POLLEN_SERVER", help="Marketplace base URL.")
]
ApiKeyOpt = Annotated[
    str,
    typer.Option("--api-key", envvar="POLLEN_API_KEY", help="Your API key (or POLLEN_API_KEY)."),
]
KeysOpt = Annotated[
    Path,
    typer.Option("--keys", envvar="POLLEN_KEYS", help="Buyer secret-key file (mode 0600)."),
]

RetryForOpt = Annotated[
    float,
    typer.Option(
        "--retry-for",
        envvar="POLLEN_RETRY_FOR",
        help="Seconds to keep retrying while the server is unreachable, then give up.",
    ),
]
MaxRetryWaitOpt = Annotated[
    float, typer.Option("--max-retry-wait", help="Longest wait between two retries, seconds.")
]
NoProgressOpt = Annotated[
    bool,
    typer.Option(
        "--no-progress",
        help="No live bars, even on a terminal: one plain line per event (as in a pipe).",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the errors a user can fix into one clear line and exit status 1."""
    from agents.client import ApiError, ServerUnreachableError
    from crypto import PollenError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        except ServerUnreachableError as exc:
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}; state is saved, run again to resume"
            )
        except (PollenError, DataError, FileNotFoundError, ValueError) as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        except KeyboardInterrupt:
            err_console.print("interrupted; state is saved, run the same command to resume")
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def _client(server: str, api_key: str | None) -> Any:
    from agents.client import PollenClient

    if not api_key:
        raise ValueError("no API key: pass --api-key or set POLLEN_API_KEY")
    return PollenClient(server, api_key)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    console.print(f"account {escape(created['id'])} ({escape(created['role'])})")
    console.print(f"API key (shown once): [bold]{created['api_key']}[/bold]")
    if created["role"] == "provider":
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
    acct = _client(server, api_key).connect()
    if acct["verified_at"]:
        console.print(f"verified ({escape(str(acct['verified_by']))}): you are matched to jobs")
    else:
        console.print("not verified yet: finish Stripe's onboarding, then run this again")


# ---------------------------------------------------------------------------- jobs


from agents.jobspec import load_spec  # noqa: E402  (YAML specs; `schema_from`, `task`)


@job_app.command("post")
@friendly
def job_post(
    spec_file: Annotated[Path, typer.Argument(help="Job spec (YAML).", metavar="SPEC.yaml")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    keys: KeysOpt = DEFAULT_KEYS,
    allow_low_budget: Annotated[
        bool, typer.Option("--allow-low-budget", help="Post even if the budget looks short.")
    ] = False,
) -> None:
    """Post a job: validate the spec, upload the public context and initial model, fund it."""
    from agents.buyer import post_job
    from agents.cli_trust import identity_path
    from agents.jobspec import budget_problem
    from crypto import BuyerKeys
    from crypto.identity import IdentityKey

    spec = load_spec(spec_file)
    check_spec(spec, spec_file)
    short = budget_problem(spec)
    if short and not allow_low_budget:
        raise ValueError(short)
    if short:
        err_console.print(f"[yellow]warning:[/yellow] {escape(short)}")
    client = _client(server, api_key)
    buyer_keys = BuyerKeys.load(keys)
    identity = IdentityKey.load_or_create(identity_path(keys))
    console.print(f"signing the manifest with identity {identity.fingerprint}")
    job = post_job(client, buyer_keys, spec, identity=identity)
    console.print(f"job [bold]{escape(job['id'])}[/bold] is {escape(job['state'])}")
    console.print(f"next: pollen job run {escape(job['id'])} --test YOUR_HELD_OUT.csv")


def check_spec(spec: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a spec the server would refuse: unknown keys, bad values."""
    from pydantic import ValidationError

    from market.models.jobs import JobCreate

    try:
        JobCreate.model_validate(spec)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key {where!r}")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{where}: {message}" if where else message)
        raise ValueError(f"{path}: " + "; ".join(problems)) from None


@job_app.command("run")
@friendly
def job_run(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    test: Annotated[Path, typer.Option(help="The buyer's held-out data (CSV/npz/Parquet).")],
    label: Annotated[
        str | None, typer.Option(help="Label column (default: the job's).", hidden=True)
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    keys: KeysOpt = DEFAULT_KEYS,
    out: Annotated[Path, typer.Option(help="Where the model and metrics go.")] = Path("pollen-out"),
    optimizer: Annotated[str, typer.Option(help="fedavg or fedadam.")] = "fedavg",
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 0.5,
    retry_for: RetryForOpt = 300.0,
    max_retry_wait: MaxRetryWaitOpt = 10.0,
    no_progress: NoProgressOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Drive a job: each round decrypt the sum, step the model, evaluate, publish the next.

    While a round collects, shows how many updates are in and the time to its deadline
    (live on a terminal, a line per change otherwise); then the round's metrics."""
    from agents.buyer import BuyerRun, RoundReport
    from agents.client import Backoff
    from agents.progress import RoundStatus, round_watch
    from agents.tabular import read_table
    from crypto import BuyerKeys

    _logging(verbose)
    say = functools.partial(_say, "buyer")

    from agents.cli_trust import identity_path
    from crypto.identity import IdentityKey

    with round_watch(console, functools.partial(_say, None), live=not no_progress) as watch:

        def show(r: RoundReport) -> None:
            watch.closed()
            console.print(
                escape(
                    f"round {r.round:>3}/{run.rounds_total}: {r.describe()}  "
                    f"providers {r.providers}  samples {r.samples}"
                ),
                highlight=False,
            )

        run = BuyerRun(
            _client(server, api_key),
            BuyerKeys.load(keys),
            job_id,
            read_table(test),
            identity=IdentityKey.load_or_create(identity_path(keys)),
            out_dir=out,
            optimizer=optimizer,
            notify=say,
            on_round=show,
            on_collecting=lambda rnd: watch.collecting(
                RoundStatus.from_round(rnd, run.rounds_total)
            ),
            poll_s=poll,
            backoff=Backoff(
                give_up_after_s=retry_for,
                first_wait_s=min(poll, max_retry_wait),
                max_wait_s=max_retry_wait,
                notify=say,
            ),
        )
        outcome = run.run()
    console.print(
        escape(
            f"job {job_id} {outcome.state}; model {outcome.model_path}, "
            f"metrics {outcome.metrics_path}"
        )
    )


@job_app.command("status")
@friendly
def job_status(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
) -> None:
    """Show a job's state, providers and per-round metrics."""
    job = _client(server, api_key).get_job(job_id)
    if as_json:
        console.print_json(json.dumps(job))
        return
    console.print(
        f"[bold]{escape(job['id'])}[/bold] {escape(repr(job['title']))}: {escape(job['state'])} "
        f"(round {job['current_round']}/{job['rounds_total']})"
    )
    if job["state"] in ("funding", "open"):
        _print_matching(_client(server, api_key).get_matching(job_id))
    console.print(rounds_table(job))
    spent = _client(server, api_key).get_privacy(job_id)
    if spent:
        eps = Table("provider", "ε spent (DP-SGD)", "δ", "after round")
        for r in spent:
            eps.add_row(r["provider_id"], f"{r['epsilon']:.3f}", f"{r['delta']:g}", str(r["round"]))
        console.print(eps)


# ---------------------------------------------------------------------------- agent


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

    _logging(verbose)
    torch.set_num_threads(1)
    dataset = read_table(data)
    if label not in dataset.columns:
        raise DataError(f"{data}: no label column {label!r} (--label); columns are {dataset.names}")
    state = StateFile(state_dir / "agent-state.json")
    say = functools.partial(_say, name)
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
        state.data.update(api_key=created["api_key"], account_id=created["id"])
        state.save()
        key = created["api_key"]
        say(f"registered provider account {created['id']}")
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
        backoff.call(agent.ensure_listing, classes=_parse_classes(classes))
        agent.run(poll_s=poll, exit_after_jobs=exit_after_jobs, backoff=backoff)


def _print_matching(report: dict[str, Any]) -> None:
    """Why an open job is waiting: the listings that fit it and why the others do not."""
    accepted = report["offers"].get("accepted", 0)
    console.print(
        f"matching: {report['eligible']} of {report['listings']} active listings can be "
        f"offered this job; offers {report['offers'] or 'none yet'}; "
        f"{accepted} of the {report['min_providers']} providers needed have accepted"
    )
    for row in report["excluded"]:
        console.print(f"  {row['listings']:>4} left out: {escape(str(row['reason']))}")


def rounds_table(job: dict[str, Any]) -> Table:
    """A job's rounds with the measures its task has (accuracy, or RMSE, MAE and R²)."""
    task = (job.get("spec") or {}).get("task")
    measures = ["accuracy"] if task != "regression" else ["rmse", "mae", "r2"]
    table = Table("round", "state", "attempt", "submitted", *measures, "loss")
    for r in job["rounds"]:
        m = r.get("metrics") or {}
        table.add_row(
            str(r["round"]),
            escape(r["state"]),
            str(r["attempt"]),
            str(r["submitted"]),
            *(f"{m[k]:.4f}" if k in m else "" for k in [*measures, "loss"]),
        )
    return table


def _say(name: str | None, message: str) -> None:
    # Escaped: "[provider-0]" or an "[Errno 111]" in a message would be eaten as markup.
    console.print(escape(f"[{name}] {message}" if name else message), highlight=False)


def _parse_classes(text: str | None) -> list[int] | None:
    if not text:
        return None
    if "-" in text and "," not in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(c) for c in text.split(",")]


# ---------------------------------------------------------------------------- admin


@admin_app.command("credit")
@friendly
def admin_credit(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    amount_cents: Annotated[int, typer.Argument(help="Amount in minor units.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Manual rail: credit a job's funding after the money arrived by other means."""
    credit = _client(server, api_key).credit_job(job_id, amount_cents)
    console.print(
        f"credited {amount_cents} to {escape(job_id)}: job is {escape(credit['job_state'])}"
    )


@admin_app.command("approve-provider")
@friendly
def admin_approve_provider(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Verify a provider: only verified providers are matched and count toward quorums."""
    acct = _client(server, api_key).approve_provider(account_id)
    console.print(
        f"provider {escape(acct['id'])} ({escape(acct['name'])}) verified by "
        f"{escape(str(acct['verified_by']))}"
    )


@admin_app.command("revoke-provider")
@friendly
def admin_revoke_provider(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Withdraw a provider's verification: no new offers, its pending offers withdrawn."""
    acct = _client(server, api_key).revoke_provider(account_id)
    console.print(f"provider {escape(acct['id'])} ({escape(acct['name'])}) is no longer verified")


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
