"""Faults with real processes on loopback: kill -9 at the exact moment, restart, check.

Each test runs the marketplace under uvicorn, provider agents and the buyer client as
`python -m agents.cli` processes, and SIGKILLs one of them at an instant it observes (a log
line, a request held in flight by `FaultProxy`, a count on the server). Jobs are small: logreg
on digits, 2 rounds, 3 providers. A "slow" provider holds its rows repeated so its local
training lasts seconds, which gives "mid-training" a window to land in.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session, select

from agents.buyer import initial_model_bytes, post_job
from agents.client import PollenClient
from agents.data import Dataset, concat, prepare, write_csv
from agents.demo import job_spec
from agents.experiment import FederatedSplit, load_digits_split
from agents.modelio import flatten, load_safetensors, unflatten_into
from agents.models import build_model
from agents.optim import FedAvg
from agents.processes import free_port, start_agent, stop
from agents.sealing import train_seed
from agents.training import compute_update, train_local
from crypto import Accumulator, BuyerKeys, weight_norm
from crypto.identity import IdentityKey
from dataspec.views import JobFunding, RoundPublic
from market.db import make_engine
from market.models import Round, Submission
from tests.utils.faults import (
    FaultProxy,
    LogFile,
    ServerProcess,
    serve_restartable,
    sigkill,
    start_buyer,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROUNDS = 2
PROVIDERS = 3
SLOW_REPEAT = 25  # ≈ 12k rows: a few seconds of local training on this machine
# Round 1 must fit in it on a loaded 2-core machine (it takes about a second); round 2, with
# one provider gone, waits for all of it.
GONE_DEADLINE_S = 8
# --no-dp: these tests pin the encrypted result to plaintext FedAvg exactly, so the agents opt
# out of their default DP-SGD noise.
AGENT_OPTIONS = ["--retry-for", "120", "--max-retry-wait", "1", "--poll", "0.2", "--no-dp"]
# CKKS noise on these sums is below 1e-6; a lost or doubled update moves weights by tenths.
ATOL = 1e-4
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A restartable marketplace process (SQLite by default, or PostgreSQL if parametrized)."""
    env = {"POLLEN_DEADLINE_TICK_S": "0.2", "POLLEN_MIN_ROUND_DEADLINE_S": "1"}
    yield from serve_restartable(request, tmp_path, getattr(request, "param", "sqlite"), env)


@pytest.fixture(autouse=True)
def _wide_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich wraps at 80 columns when not on a terminal; the tests read whole log lines.
    monkeypatch.setenv("COLUMNS", "200")


@dataclass
class Market:
    """One job on a live server, with the processes a test starts, kills and restarts."""

    server: ServerProcess
    tmp: Path
    split: FederatedSplit
    datasets: list[Dataset]
    keys: BuyerKeys
    buyer: PollenClient
    buyer_key: str
    admin: PollenClient
    job: JobFunding
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: dict[str, LogFile] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.job.id

    def _log(self, name: str) -> LogFile:
        # One reader per file, so a `mark()` holds for every later `wait()`.
        return self._logs.setdefault(name, LogFile(self.tmp / f"{name}.log"))

    def agent_log(self, i: int) -> LogFile:
        return self._log(f"agent{i}")

    @property
    def buyer_log(self) -> LogFile:
        return self._log("buyer")

    def start_agent(self, i: int, url: str | None = None) -> subprocess.Popen[bytes]:
        proc = start_agent(
            url or self.server.url,
            self.tmp / f"p{i}.csv",
            self.tmp / f"agent{i}",
            i,
            self.tmp / f"agent{i}.log",
            AGENT_OPTIONS,
            # Enrolled straight with the server (not through a test's faulty proxy).
            operator=PollenClient(self.server.url, self.server.admin_key),
        )
        self.procs.append(proc)
        return proc

    def start_buyer(self, url: str | None = None) -> subprocess.Popen[bytes]:
        proc = start_buyer(
            url or self.server.url,
            self.job_id,
            self.buyer_key,
            self.tmp / "buyer.key",
            self.tmp / "test.csv",
            self.tmp / "buyer",
            self.tmp / "buyer.log",
        )
        self.procs.append(proc)
        return proc

    def agent_state(self, i: int) -> dict[str, Any]:
        path = self.tmp / f"agent{i}" / "agent-state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def provider_id(self, i: int) -> str:
        return str(wait_for(lambda: self.agent_state(i).get("account_id"), f"agent {i} account"))

    def envelope_file(self, i: int, number: int) -> Path:
        return self.tmp / f"agent{i}" / "envelopes" / f"{self.job_id}-r{number}.bin"

    def round(self, number: int) -> RoundPublic:
        return self.buyer.get_round(self.job_id, number)

    def submissions(self) -> list[tuple[int, str]]:
        """(round, provider) of every accepted submission, straight from the database."""
        engine = make_engine(self.server.env["POLLEN_DATABASE_URL"])
        try:
            with Session(engine) as session:
                rows = session.exec(
                    select(Submission).where(Submission.job_id == self.job_id)
                ).all()
                return sorted((s.round_number, s.provider_id) for s in rows)
        finally:
            engine.dispose()

    def accumulator(self, number: int) -> tuple[str | None, int]:
        """The round's persisted running sum: (blob key, updates in it)."""
        engine = make_engine(self.server.env["POLLEN_DATABASE_URL"])
        try:
            with Session(engine) as session:
                rnd = session.exec(
                    select(Round).where(Round.job_id == self.job_id, Round.number == number)
                ).one()
                return rnd.acc_key, rnd.acc_count
        finally:
            engine.dispose()

    def sum_members(self, number: int) -> list[str]:
        """The providers the round's persisted sum itself lists (its header), in order."""
        key, _ = self.accumulator(number)
        assert key is not None
        data = (self.server.data_dir / "blobs" / key).read_bytes()
        return Accumulator.from_bytes(data).provider_ids

    def stored_envelopes(self) -> list[Path]:
        """Individual envelopes in the blob store (none: a sum holds them)."""
        return sorted((self.server.data_dir / "blobs" / "jobs").glob("*/rounds/*/envelopes/*"))

    def partial_uploads(self) -> list[Path]:
        return sorted((self.server.data_dir / "blobs" / ".tmp").glob("upload-*"))

    def wait_all(self, timeout: float = 150.0) -> None:
        """Every process started (and not killed) exits 0: the job ended for all of them."""
        for proc in self.procs:
            if proc.returncode is not None:
                continue
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, self.logs()

    def logs(self) -> str:
        parts = [
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.tmp.glob("*.log"))
        ]
        return "\n".join(parts) + "\n--- server\n" + self.server.log.text()[-6000:]

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def market_factory(server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    """Builds the job a test runs; stops whatever processes the test left running."""
    made: list[Market] = []

    def make(*, slow: int | None = None, deadline_s: int = 120, seed: int = 3) -> Market:
        split = load_digits_split(PROVIDERS, alpha=0.5, seed=seed)
        datasets = list(split.providers)
        if slow is not None:
            datasets[slow] = concat([datasets[slow]] * SLOW_REPEAT)
        for i, ds in enumerate(datasets):
            write_csv(ds, tmp_path / f"p{i}.csv")
        write_csv(split.test, tmp_path / "test.csv")
        keys = BuyerKeys.generate()
        keys.save(tmp_path / "buyer.key")
        registered = PollenClient(server.url, None).register(role="buyer", name="faults-buyer")
        buyer = PollenClient(server.url, registered.api_key)
        admin = PollenClient(server.url, server.admin_key)
        spec = job_spec(ROUNDS, PROVIDERS, split.schema.model_dump())
        # A cap above every dataset: each update weighs min(its sample count, the median), as
        # in the plaintext FedAvg the results are compared with.
        spec.update(round_deadline_s=deadline_s, sample_cap=10**6)
        # The buyer process (`pollen job run --keys`) signs with the identity beside its keys.
        identity = IdentityKey.load_or_create(tmp_path / "buyer.key.identity")
        job = post_job(buyer, keys, spec, identity=identity)
        admin.credit_job(job.id, spec["budget_cents"])
        market = Market(
            server, tmp_path, split, datasets, keys, buyer, registered.api_key, admin, job
        )
        made.append(market)
        return market

    yield make
    for market in made:
        market.stop_all()


def plaintext_fedavg(market: Market) -> np.ndarray:
    """The final weights the same job reaches without encryption or faults."""
    spec = market.job.spec
    schema = market.split.schema
    model = build_model(spec.model, schema.n_features, schema.n_classes, seed=spec.seed)
    load_safetensors(model, initial_model_bytes(spec))
    weights = flatten(model)
    local = [prepare(ds, schema) for ds in market.datasets]
    norm = weight_norm(len(data) for data in local)  # the marketplace's weighting
    for number in range(1, ROUNDS + 1):
        total = np.zeros_like(weights, dtype=np.float64)
        samples = 0
        for i, data in enumerate(local):
            unflatten_into(model, weights)
            train_local(
                model,
                data,
                epochs=spec.local_epochs,
                lr=spec.learning_rate,
                batch_size=spec.batch_size,
                seed=train_seed(spec.seed, number, i),
            )
            weight = min(len(data), norm)
            total += weight * compute_update(weights, flatten(model)).astype(np.float64)
            samples += weight
        weights = FedAvg().step(weights, (total / samples).astype(np.float32))
    return weights


def final_weights(market: Market) -> np.ndarray:
    schema = market.split.schema
    model = build_model(
        market.job.spec.model,
        schema.n_features,
        schema.n_classes,
        seed=0,
    )
    load_safetensors(model, market.buyer.get_final_model(market.job_id))
    return flatten(model)


def assert_completed_once_each(market: Market, providers: int = PROVIDERS) -> None:
    """The job completed, every round published or closed once, one update per provider."""
    status = market.buyer.get_job(market.job_id)
    assert status.state == "completed", market.logs()
    assert [r.round for r in status.rounds] == list(range(1, ROUNDS + 1))
    assert all(r.attempt == 1 and r.metrics for r in status.rounds)
    subs = market.submissions()
    assert len(subs) == len(set(subs)) == providers * ROUNDS


def assert_ledger_intact(market: Market) -> None:
    report = market.admin.verify_ledger()
    assert report.ok and report.broken is None, report
    assert not report.negative_accounts
    totals = report.totals["usd"]
    assert (
        totals["funded"] == totals["paid"] + totals["fees"] + totals["refunded"] + totals["escrow"]
    )


# ---------------------------------------------------------------------------- agents


def test_agent_killed_mid_training_resumes_and_submits_once(market_factory: Any) -> None:
    """kill -9 of an agent while it trains: restarted, it trains again and submits exactly once."""
    market: Market = market_factory(slow=0)
    agents = [market.start_agent(i) for i in range(PROVIDERS)]
    victim = market.provider_id(0)
    buyer = market.start_buyer()

    market.agent_log(0).wait(r"round 1: training on \d+ samples", alive=agents[0])
    sigkill(agents[0])
    # It died mid-training: nothing prepared, nothing on the server.
    assert not market.envelope_file(0, 1).exists()
    assert (1, victim) not in market.submissions()
    assert market.round(1).state == "collecting"

    log = market.agent_log(0)
    log.mark()
    market.start_agent(0)
    log.wait(r"round 1: submitted", timeout=90)
    market.wait_all()
    assert buyer.returncode == 0

    assert_completed_once_each(market)
    assert market.submissions().count((1, victim)) == 1
    assert market.sum_members(1).count(victim) == 1 and market.stored_envelopes() == []
    assert market.round(1).included == sorted(market.provider_id(i) for i in range(3))
    text = log.text()
    assert text.count("round 1: training") == 2 and text.count("round 1: submitted") == 1


def test_agent_killed_mid_upload_leaves_nothing_and_resends_once(market_factory: Any) -> None:
    """kill -9 mid-upload: the cut upload adds nothing; the restarted agent sends it once."""
    market: Market = market_factory()
    with FaultProxy(market.server.port) as proxy:
        proxy.hold(r"^PUT /v1/jobs/[^/]+/rounds/1/submission ", fraction=0.5)
        agents = [market.start_agent(0, url=proxy.url)]
        agents += [market.start_agent(i) for i in (1, 2)]
        victim = market.provider_id(0)
        buyer = market.start_buyer()

        held = proxy.wait_held(timeout=90)
        assert 0 < held.forwarded < held.content_length
        wait_for(lambda: market.round(1).submitted == 2, "the other two updates")
        acc_before = market.accumulator(1)
        in_flight = market.envelope_file(0, 1).read_bytes()
        wait_for(market.partial_uploads, "the server to be receiving the upload")
        sigkill(agents[0])

        # The server saw the body cut short: no partial upload kept, the sum untouched.
        wait_for(lambda: not market.partial_uploads(), "the cut upload to be discarded")
        assert market.accumulator(1) == acc_before
        assert (1, victim) not in market.submissions()
        assert market.round(1).state == "collecting"

        proxy.release()
        market.start_agent(0, url=proxy.url)
        market.wait_all()
    assert buyer.returncode == 0

    assert_completed_once_each(market)
    assert market.submissions().count((1, victim)) == 1
    assert market.sum_members(1).count(victim) == 1 and market.stored_envelopes() == []
    # The restarted agent re-sent the very bytes it had prepared before the kill.
    recorded = market.agent_state(0)["jobs"][market.job_id]["submitted"]["1"]
    assert recorded == hashlib.sha256(in_flight).hexdigest()
    assert market.agent_log(0).count("round 1: training") == 1


# ---------------------------------------------------------------------------- server


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_server_killed_mid_round_recovers_the_round(
    server: ServerProcess, market_factory: Any
) -> None:
    """kill -9 of the server with 2 of 3 updates in: after a restart they still count, the sum
    decrypts to the plaintext FedAvg result, the ledger is intact, agents and buyer carry on."""
    market: Market = market_factory()
    with FaultProxy(server.port) as proxy:
        # The third update is caught half uploaded when the server dies.
        proxy.hold(r"^PUT /v1/jobs/[^/]+/rounds/1/submission ", fraction=0.5)
        market.start_agent(0)
        market.start_agent(1)
        market.start_agent(2, url=proxy.url)
        market.start_buyer()
        proxy.wait_held(timeout=90)
        wait_for(lambda: market.round(1).submitted == 2, "two accepted updates")
        acc_before = market.accumulator(1)
        for i in range(PROVIDERS):
            market.agent_log(i).mark()
        market.buyer_log.mark()

        server.kill()
        market.buyer_log.wait(r"server unreachable", timeout=30)
        market.agent_log(0).wait(r"server unreachable", timeout=30)
        server.start()

        # Recovered from the database and blob store: the two accepted updates, their sum.
        rnd = market.round(1)
        assert (rnd.state, rnd.submitted) == ("collecting", 2)
        assert market.accumulator(1) == acc_before
        assert len(market.submissions()) == 2
        proxy.release()
        market.wait_all()

    assert_completed_once_each(market)
    assert market.buyer_log.count("server reachable again") == 1
    assert market.agent_log(0).count("server reachable again") == 1
    np.testing.assert_allclose(final_weights(market), plaintext_fedavg(market), atol=ATOL)
    assert_ledger_intact(market)


# ---------------------------------------------------------------------------- provider gone


def test_provider_gone_for_good_round_closes_at_deadline(market_factory: Any) -> None:
    """A provider killed for good: its round closes at the deadline with quorum, the job
    completes, and its reputation drops below its own earlier score and the others'."""
    market: Market = market_factory(deadline_s=GONE_DEADLINE_S)
    with FaultProxy(market.server.port) as proxy:
        # Caught on its way out with its round-2 update, and never seen again.
        proxy.hold(r"^PUT /v1/jobs/[^/]+/rounds/2/submission ", fraction=0.5)
        victim = market.start_agent(0, url=proxy.url)
        market.start_agent(1)
        market.start_agent(2)
        ids = [market.provider_id(i) for i in range(PROVIDERS)]
        market.start_buyer()
        proxy.wait_held(timeout=90)
        sigkill(victim)
        before = market.buyer.reputation(ids[0]).score
        assert market.round(1).included == sorted(ids)
        market.wait_all()

    rnd = market.round(2)
    assert rnd.close_reason == "deadline"
    assert rnd.included == sorted(ids[1:])
    assert market.buyer.get_job(market.job_id).state == "completed"
    gone = market.buyer.reputation(ids[0])
    others = [market.buyer.reputation(pid).score for pid in ids[1:]]
    assert gone.score < before
    assert all(gone.score < score for score in others)
    missed = [e for e in gone.history if e.kind == "missed-deadline"]
    assert [e.round for e in missed] == [2]
    assert "no update by the deadline" in missed[0].reason
    # Leaving mid-job earns no completion credit to offset the miss; staying does.
    assert "job-completed" not in {e.kind for e in gone.history}
    for pid in ids[1:]:
        assert "job-completed" in {e.kind for e in market.buyer.reputation(pid).history}
    assert_ledger_intact(market)


# ---------------------------------------------------------------------------- buyer


def test_buyer_restarted_mid_round_and_before_publishing(market_factory: Any) -> None:
    """kill -9 of `pollen job run` while a round collects, then after it decrypted but before
    its publication arrived: each restart resumes, no round is applied or published twice."""
    market: Market = market_factory()
    with (
        FaultProxy(market.server.port) as agent_proxy,
        FaultProxy(market.server.port) as buyer_proxy,
    ):
        agent_proxy.hold(r"^PUT /v1/jobs/[^/]+/rounds/1/submission ", fraction=0.5)
        market.start_agent(0, url=agent_proxy.url)
        market.start_agent(1)
        market.start_agent(2)
        buyer = market.start_buyer(url=buyer_proxy.url)
        round_1 = rf"^GET /v1/jobs/{market.job_id}/rounds/1 "
        agent_proxy.wait_held(timeout=90)
        wait_for(lambda: buyer_proxy.seen(round_1) >= 2, "the buyer to poll round 1")
        assert market.round(1).state == "collecting"
        sigkill(buyer)

        # Second life: its publication of round 2's model is caught in flight.
        buyer_proxy.hold(rf"^PUT /v1/jobs/{market.job_id}/rounds/2/model ", fraction=0.5)
        buyer = market.start_buyer(url=buyer_proxy.url)
        agent_proxy.release()
        buyer_proxy.wait_held(timeout=90)
        state = json.loads((market.tmp / "buyer" / f"{market.job_id}.state.json").read_text())
        assert state["applied"] == 1
        assert market.buyer.get_job(market.job_id).current_round == 1
        sigkill(buyer)

        buyer_proxy.release()
        market.buyer_log.mark()
        market.start_buyer(url=buyer_proxy.url)
        market.wait_all()

    assert_completed_once_each(market)
    assert market.buyer_log.count("published the model of round 2") == 1
    metrics = (market.tmp / "buyer" / f"{market.job_id}.metrics.csv").read_text().splitlines()
    assert len(metrics) == ROUNDS + 1
    np.testing.assert_allclose(final_weights(market), plaintext_fedavg(market), atol=ATOL)
    assert_ledger_intact(market)


# ---------------------------------------------------------------------------- giving up


def test_agent_and_buyer_give_up_after_retry_for(tmp_path: Path) -> None:
    """With no server for longer than --retry-for, agent and buyer retry, then exit 1 saying so."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    split = load_digits_split(PROVIDERS, alpha=0.5, seed=3)
    write_csv(split.providers[0], tmp_path / "p0.csv")
    write_csv(split.test, tmp_path / "test.csv")
    BuyerKeys.generate().save(tmp_path / "buyer.key")
    options = ["--retry-for", "3", "--max-retry-wait", "1"]
    agent = start_agent(
        url, tmp_path / "p0.csv", tmp_path / "agent0", 0, tmp_path / "agent0.log", options
    )
    buyer = start_buyer(
        url,
        "job_0123456789abcdef",
        "pk_unused",
        tmp_path / "buyer.key",
        tmp_path / "test.csv",
        tmp_path / "buyer",
        tmp_path / "buyer.log",
        retry_for=3,
    )
    try:
        codes = [agent.wait(timeout=90), buyer.wait(timeout=90)]
    finally:
        stop(agent)
        stop(buyer)
    for name, code in zip(("agent0", "buyer"), codes, strict=True):
        log = (tmp_path / f"{name}.log").read_text()
        assert code == 1, log
        assert "server unreachable" in log and "retrying for up to 3s" in log
        attempts = re.search(r"no answer from the server for (\d+)s \((\d+) attempts\)", log)
        assert attempts is not None, log
        assert int(attempts[1]) >= 3 and int(attempts[2]) >= 3
        assert "run again to resume" in log
