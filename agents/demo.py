"""`pollen demo`: the whole marketplace on one machine, with real processes on loopback.

Splits scikit-learn's digits set non-IID (Dirichlet α = 0.5) across provider agents that run
as separate processes, starts the server on the embedded default (SQLite, blob folder), and
drives a buyer through every round. Then it trains the same model the same way without
encryption (plaintext FedAvg) and on the union of the data (centralized), so the cost of
privacy is printed beside the result. At the end it prints the web dashboard's address
(`http://127.0.0.1:PORT/ui`) and the demo accounts' keys to sign in with; `--keep-serving`
keeps the server up until Ctrl-C. State stays under the demo folder, so
`pollen server --data-dir .pollen-demo` shows the finished marketplace again.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.buyer import BuyerRun, JobOutcome, RoundReport, post_job
from agents.client import PollenClient
from agents.data import concat, write_csv
from agents.demo_money import Rail, fund, settle_and_report, start_rail
from agents.experiment import (
    FederatedSplit,
    centralized,
    fedavg_plaintext,
    load_digits_split,
    prepared,
)
from agents.models import model_spec
from agents.privacy import DEFAULT_CLIP, DEFAULT_DELTA, DEFAULT_MAX_EPSILON, PrivacyTarget
from agents.processes import free_port, start_agent, start_server, stop, wait_ready
from agents.state import StateFile
from agents.training import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from dataspec.views import JobFunding

SEED = 7
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "demo.json"


def job_spec(rounds: int, providers: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "Handwritten digits (demo)",
        "model": {"arch": "logreg"},
        "rounds": rounds,
        "local_epochs": DEFAULT_EPOCHS,
        "learning_rate": DEFAULT_LR,
        "batch_size": DEFAULT_BATCH_SIZE,
        "seed": SEED,
        "schema": schema,
        "min_providers": providers,
        "max_providers": providers,
        "quorum": 2,
        "min_samples": 20,
        "sample_cap": 5000,
        "budget_cents": 20_000,
        "currency": "usd",
        "price_cap_cents": 500,
        "round_deadline_s": 300,
        "offer_ttl_s": 600,
    }


def audit_everyone(
    url: str, buyer: PollenClient, data_dir: Path, providers: int, console: Console
) -> bool:
    """Every party re-verifies its receipts and its saved head against the log."""
    from agents.audit import audit, trust_files
    from agents.trust import Trust, TrustError

    parties = [("buyer", buyer, data_dir / "buyer")]
    for i in range(providers):
        state_dir = data_dir / "agents" / f"provider-{i}"
        key = StateFile(state_dir / "agent-state.json").get("api_key")
        parties.append((f"provider-{i}", PollenClient(url, key), state_dir))
    for name, client, state_dir in parties:
        for path in trust_files(state_dir):
            try:
                checks = audit(client, Trust(path))
            except TrustError as exc:
                console.print(f"[bold red]{name}: AUDIT FAILED[/bold red]: {exc}")
                return False
            console.print(f"{name}: audit ok ({len(checks)} checks, {checks[0]})")
    return True


@dataclass
class DemoBuyer:
    """The demo's buyer: its account, keys and identity, and the job it posted."""

    client: PollenClient
    api_key: str
    keys: BuyerKeys
    identity: IdentityKey
    spec: dict[str, Any]
    job: JobFunding


def run_demo(
    *, providers: int, rounds: int, data_dir: Path, keep_serving: bool, port: int, console: Console
) -> int:
    started = time.perf_counter()
    split = prepare_data(data_dir, providers, console)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    admin_key = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        server, rail = start_market(stack, data_dir, port, admin_key, console)
        admin = PollenClient(url, admin_key)
        buyer = post_demo_job(url, data_dir, split, rounds, providers, console)
        fund(rail, url, buyer.client, admin, buyer.job, console)
        agents = start_agents(stack, url, data_dir, providers, admin, console)
        outcome = drive_job(buyer, split, data_dir, rounds, console)
        for proc in agents:
            proc.wait(timeout=120)
        # A classification job: every round reports an accuracy.
        encrypted = [r.accuracy for r in outcome.reports if r.accuracy is not None]
        spent = buyer.client.get_privacy(buyer.job.id)
        console.print(
            "ε spent per provider (DP-SGD, δ = "
            f"{DEFAULT_DELTA:g}): "
            + ", ".join(f"{r.provider_id[:10]}… {r.epsilon:.2f}" for r in spent)
        )
        plain, central = baselines(buyer.spec, split, rounds, console)
        compare_accuracy(buyer.job.id, encrypted, plain, central, console)
        console.rule("[bold]Settlement")
        settled = settle_and_report(admin, buyer.client, buyer.job.id, console)
        console.rule("[bold]Audit")
        if not audit_everyone(url, buyer.client, data_dir, providers, console):
            return 1
        figures: dict[str, Any] = {
            "providers": providers,
            "rounds": rounds,
            "encrypted_accuracy": encrypted[-1],
            "plaintext_accuracy": plain[-1],
            "centralized_accuracy": central,
            "epsilon_per_provider": {r.provider_id: r.epsilon for r in spent},
            "encrypted_per_round": encrypted,
            "plaintext_per_round": plain,
            "job_id": buyer.job.id,
            **settled,
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_figures(figures, outcome, console)
        console.rule("[bold]Dashboard")
        sign_ins = {"buyer (demo-buyer)": buyer.api_key, "operator": admin_key}
        sign_ins.update(provider_keys(data_dir, providers))
        show_dashboard(console, url, sign_ins, data_dir=data_dir, port=port, live=keep_serving)
        if keep_serving:
            serve_until_interrupted(server, console)
    return 0


def prepare_data(data_dir: Path, providers: int, console: Console) -> FederatedSplit:
    """A fresh demo folder: each provider's share of the digits and the buyer's test rows."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    (data_dir / "providers").mkdir(parents=True)
    (data_dir / "buyer").mkdir(parents=True)
    (data_dir / "agents").mkdir(parents=True)

    split = load_digits_split(providers, alpha=0.5, seed=SEED)
    for i, ds in enumerate(split.providers):
        write_csv(ds, data_dir / "providers" / f"provider-{i}.csv")
    write_csv(split.test, data_dir / "buyer" / "test.csv")
    console.rule("[bold]Pollen demo")
    console.print(
        f"digits split non-IID (Dirichlet α=0.5) over {providers} providers: "
        + ", ".join(f"{len(d)} rows" for d in split.providers)
        + f"; buyer keeps {len(split.test)} rows held out"
    )
    return split


def start_market(
    stack: ExitStack, data_dir: Path, port: int, admin_key: str, console: Console
) -> tuple[subprocess.Popen[bytes], Rail]:
    """The payment rail and the server, both stopped when `stack` closes."""
    url = f"http://127.0.0.1:{port}"
    rail = start_rail(data_dir, free_port(), console)
    stack.callback(rail.stop)
    server = start_server(data_dir, port, admin_key, extra_env=rail.env)
    stack.callback(stop, server)
    wait_ready(url, server)
    console.print(escape(f"marketplace on {url} (SQLite + blobs in {data_dir}/, {rail.name} rail)"))
    console.print(f"dashboard live at {url}/ui while the demo runs")
    return server, rail


def post_demo_job(
    url: str,
    data_dir: Path,
    split: FederatedSplit,
    rounds: int,
    providers: int,
    console: Console,
) -> DemoBuyer:
    """A buyer account with fresh keys posts the digits job, signed, for funding."""
    keys = BuyerKeys.generate()
    keys.save(data_dir / "buyer" / "buyer.key")
    anon = PollenClient(url, None)
    buyer_acct = anon.register(role="buyer", name="demo-buyer")
    buyer = PollenClient(url, buyer_acct.api_key)
    spec = job_spec(rounds, providers, split.schema.model_dump())
    identity = IdentityKey.load_or_create(data_dir / "buyer" / "buyer.key.identity")
    job = post_job(buyer, keys, spec, identity=identity)
    console.print(escape(f"buyer posted job {job.id} (fingerprint {keys.fingerprint[:16]}…)"))
    return DemoBuyer(buyer, buyer_acct.api_key, keys, identity, spec, job)


def start_agents(
    stack: ExitStack,
    url: str,
    data_dir: Path,
    providers: int,
    admin: PollenClient,
    console: Console,
) -> list[subprocess.Popen[bytes]]:
    """One provider agent process per share of the data, stopped when `stack` closes."""
    agents = []
    for i in range(providers):
        log = data_dir / "agents" / f"provider-{i}.log"
        proc = start_agent(
            url,
            data_dir / "providers" / f"provider-{i}.csv",
            data_dir / "agents" / f"provider-{i}",
            i,
            log,
            operator=admin,  # the operator approves each provider it onboards
        )
        stack.callback(stop, proc)
        agents.append(proc)
    console.print(
        escape(
            f"{providers} provider accounts approved by the operator (only verified providers "
            f"are matched), their agents started (logs in {data_dir}/agents/)"
        )
    )
    return agents


def drive_job(
    buyer: DemoBuyer, split: FederatedSplit, data_dir: Path, rounds: int, console: Console
) -> JobOutcome:
    """The buyer runs every round of its job, printing each round's accuracy."""

    def show(r: RoundReport) -> None:
        console.print(
            f"  round {r.round:>2}/{rounds}: accuracy {r.accuracy:.4f}  "
            f"loss {r.loss:.4f}  ({r.providers} providers, {r.samples} samples, "
            f"decrypt+step {r.seconds:.2f}s)"
        )

    run = BuyerRun(
        buyer.client,
        buyer.keys,
        buyer.job.id,
        split.test,
        out_dir=data_dir / "buyer",
        on_round=show,
        poll_s=0.2,
        identity=buyer.identity,
    )
    return run.run()


def baselines(
    spec: dict[str, Any], split: FederatedSplit, rounds: int, console: Console
) -> tuple[list[float], float]:
    """Accuracy per round of plaintext FedAvg with the same DP-SGD, and of training on the
    union of the data (centralized), seeded as the job is."""
    console.print(
        "computing the baselines (plaintext FedAvg with the same DP-SGD, seeded; centralized)…"
    )
    train, test = prepared(split)
    model = model_spec(spec["model"])
    n_classes = split.schema.n_classes
    plain = fedavg_plaintext(
        model,
        train,
        test,
        rounds=rounds,
        local_epochs=DEFAULT_EPOCHS,
        lr=DEFAULT_LR,
        batch_size=DEFAULT_BATCH_SIZE,
        seed=SEED,
        record_dp=PrivacyTarget(DEFAULT_MAX_EPSILON, DEFAULT_DELTA, DEFAULT_CLIP),
        n_classes=n_classes,
    )
    central = centralized(
        model,
        concat(train),
        test,
        epochs=rounds * DEFAULT_EPOCHS,
        lr=DEFAULT_LR,
        batch_size=DEFAULT_BATCH_SIZE,
        seed=SEED,
        n_classes=n_classes,
    )
    return plain, central


def compare_accuracy(
    job_id: str, encrypted: list[float], plain: list[float], central: float, console: Console
) -> None:
    """The encrypted run beside the baselines, round by round and at the end."""
    table = Table(title=escape(f"Job {job_id}: accuracy on the buyer's held-out data"))
    table.add_column("round", justify="right")
    table.add_column("encrypted (Pollen)", justify="right")
    table.add_column("plaintext FedAvg (same DP)", justify="right")
    for i, (e, p) in enumerate(zip(encrypted, plain, strict=True), start=1):
        table.add_row(str(i), f"{e:.4f}", f"{p:.4f}")
    table.add_row("centralized", "", f"{central:.4f}")
    console.print(table)
    gap = (encrypted[-1] - plain[-1]) * 100
    console.print(
        f"final: encrypted {encrypted[-1]:.4f}, plaintext FedAvg {plain[-1]:.4f} "
        f"({gap:+.2f} points), centralized {central:.4f} "
        f"({(encrypted[-1] - central) * 100:+.2f} points)"
    )


def write_figures(figures: dict[str, Any], outcome: JobOutcome, console: Console) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    console.print(
        escape(f"model: {outcome.model_path}; metrics: {outcome.metrics_path}; figures: {RESULTS}")
    )
    console.print(f"demo finished in {figures['seconds']}s")


def provider_keys(data_dir: Path, providers: int) -> dict[str, str]:
    """The API key each demo provider's agent registered with, by its name."""
    keys = {}
    for i in range(providers):
        state = StateFile(data_dir / "agents" / f"provider-{i}" / "agent-state.json")
        if state.get("api_key"):
            keys[f"provider-{i}"] = state.get("api_key")
    return keys


def show_dashboard(
    console: Console,
    url: str,
    sign_ins: dict[str, str],
    *,
    data_dir: Path,
    port: int,
    live: bool,
) -> None:
    """Print the dashboard's address and the demo accounts' keys to sign in with."""
    console.print(f"dashboard: [bold]{url}/ui[/bold]")
    table = Table(title="Sign in at /ui/login with one of these API keys (demo accounts)")
    table.add_column("account")
    table.add_column("API key")
    for who, key in sign_ins.items():
        table.add_row(escape(who), escape(key))
    console.print(table)
    if not live:
        console.print(
            escape(
                "the demo's server has stopped; to look again: "
                f"`pollen server --data-dir {data_dir} --port {port}` and open {url}/ui, "
                "or run `pollen demo --keep-serving`"
            )
        )


def serve_until_interrupted(server: subprocess.Popen[bytes], console: Console) -> None:
    """Keep the demo's server (and payment rail) up until Ctrl-C or SIGTERM; the caller's
    cleanup then stops them, so nothing is left running behind the demo."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    console.print(f"server running (pid {server.pid}); press Ctrl-C to stop it")
    try:
        while server.poll() is None:
            time.sleep(0.5)
        console.print(f"[yellow]the server exited with {server.returncode}[/yellow]")
    except KeyboardInterrupt:
        console.print("stopping the server")
    finally:
        signal.signal(signal.SIGTERM, previous)
