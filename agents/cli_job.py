"""`pollen job post | run | status`: the buyer's commands (`job_app`; `agents.cli_data` and
`agents.cli_money` add `job init | cancel | model | receipt` to it)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agents.cli_base import (
    DEFAULT_KEYS,
    DEFAULT_SERVER,
    ApiKeyOpt,
    KeysOpt,
    MaxRetryWaitOpt,
    NoProgressOpt,
    RetryForOpt,
    ServerOpt,
    api_client,
    console,
    err_console,
    friendly,
    retrying,
    say_as,
    setup_logging,
)
from agents.jobspec import load_spec  # (YAML specs; `schema_from`, `task`)
from dataspec.states import JobState, OfferState
from dataspec.views import JobPublic, MatchingPublic

if TYPE_CHECKING:
    from agents.buyer import BuyerRun
    from agents.client import Backoff, PollenClient
    from agents.progress import RoundWatch

job_app = typer.Typer(help="Post, run and inspect training jobs (buyer).", no_args_is_help=True)


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
    client = api_client(server, api_key)
    buyer_keys = BuyerKeys.load(keys)
    identity = IdentityKey.load_or_create(identity_path(keys))
    console.print(f"signing the manifest with identity {identity.fingerprint}")
    job = post_job(client, buyer_keys, spec, identity=identity)
    console.print(f"job [bold]{escape(job.id)}[/bold] is {escape(job.state)}")
    console.print(f"next: pollen job run {escape(job.id)} --test YOUR_HELD_OUT.csv")


def check_spec(spec: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a spec the server would refuse: unknown keys, bad values."""
    from pydantic import ValidationError

    from dataspec.jobs import JobCreate

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
    from agents.progress import round_watch

    setup_logging(verbose)
    say = functools.partial(say_as, "buyer")
    with round_watch(console, functools.partial(say_as, None), live=not no_progress) as watch:
        run = _buyer_run(
            job_id,
            test,
            client=api_client(server, api_key),
            keys=keys,
            out=out,
            optimizer=optimizer,
            poll=poll,
            backoff=retrying(retry_for, poll, max_retry_wait, say),
            say=say,
            watch=watch,
        )
        outcome = run.run()
    console.print(
        escape(
            f"job {job_id} {outcome.state}; model {outcome.model_path}, "
            f"metrics {outcome.metrics_path}"
        )
    )


def _buyer_run(
    job_id: str,
    test: Path,
    *,
    client: PollenClient,
    keys: Path,
    out: Path,
    optimizer: str,
    poll: float,
    backoff: Backoff,
    say: Callable[[str], None],
    watch: RoundWatch,
) -> BuyerRun:
    """The buyer's run of the job, printing each round's outcome and showing the
    collecting round on `watch`."""
    from agents.buyer import BuyerRun, RoundReport
    from agents.cli_trust import identity_path
    from agents.progress import RoundStatus
    from agents.tabular import read_table
    from crypto import BuyerKeys
    from crypto.identity import IdentityKey

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
        client,
        BuyerKeys.load(keys),
        job_id,
        read_table(test),
        identity=IdentityKey.load_or_create(identity_path(keys)),
        out_dir=out,
        optimizer=optimizer,
        notify=say,
        on_round=show,
        on_collecting=lambda rnd: watch.collecting(RoundStatus.from_round(rnd, run.rounds_total)),
        poll_s=poll,
        backoff=backoff,
    )
    return run


@job_app.command("status")
@friendly
def job_status(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
) -> None:
    """Show a job's state, providers and per-round metrics."""
    job = api_client(server, api_key).get_job(job_id)
    if as_json:
        console.print_json(job.model_dump_json())
        return
    console.print(
        f"[bold]{escape(job.id)}[/bold] {escape(repr(job.title))}: {escape(job.state)} "
        f"(round {job.current_round}/{job.rounds_total})"
    )
    if job.state in (JobState.FUNDING, JobState.OPEN):
        _print_matching(api_client(server, api_key).get_matching(job_id))
    console.print(rounds_table(job))
    spent = api_client(server, api_key).get_privacy(job_id)
    if spent:
        eps = Table("provider", "ε spent (DP-SGD)", "δ", "after round")
        for r in spent:
            eps.add_row(r.provider_id, f"{r.epsilon:.3f}", f"{r.delta:g}", str(r.round))
        console.print(eps)


def _print_matching(report: MatchingPublic) -> None:
    """Why an open job is waiting: the listings that fit it and why the others do not."""
    accepted = report.offers.get(OfferState.ACCEPTED, 0)
    console.print(
        f"matching: {report.eligible} of {report.listings} active listings can be "
        f"offered this job; offers {report.offers or 'none yet'}; "
        f"{accepted} of the {report.min_providers} providers needed have accepted"
    )
    for row in report.excluded:
        console.print(f"  {row.listings:>4} left out: {escape(row.reason)}")


def rounds_table(job: JobPublic) -> Table:
    """A job's rounds with the measures its task has (accuracy, or RMSE, MAE and R²)."""
    measures = ["accuracy"] if job.spec.task != "regression" else ["rmse", "mae", "r2"]
    table = Table("round", "state", "attempt", "submitted", *measures, "loss")
    for r in job.rounds:
        m = r.metrics or {}
        table.add_row(
            str(r.round),
            escape(r.state),
            str(r.attempt),
            str(r.submitted),
            *(f"{m[k]:.4f}" if k in m else "" for k in [*measures, "loss"]),
        )
    return table
