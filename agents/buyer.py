"""The buyer client: post a job, then drive it round by round to a trained model.

Each round the buyer downloads the round's aggregate (only the sum of at least `quorum`
updates is ever released), decrypts it with its secret key, divides by the summed weights,
applies the server optimizer (FedAvg or FedAdam), evaluates on its own held-out data, posts
the metrics and publishes the next global model. Its progress is kept in a state file next
to the model it has computed, so a restarted buyer picks up where it stopped: each step is
derived from the server's view of the job and the state file, never from where the previous
process happened to be, so a round is applied once and published once whatever the instant
of a crash. While the server is away the buyer waits with backoff (`Backoff`).

Posting the job (context, initial model, signed manifest) is agents.posting, whose names
are re-exported here.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from agents.client import Backoff, PollenClient
from agents.data import Dataset, prepare
from agents.modelio import flatten, load_safetensors, unflatten_into
from agents.models import build_model
from agents.optim import ServerOptimizer, make_server_optimizer
from agents.posting import (
    buyer_identity,
    ensure_registered,
    initial_model_bytes,
    model_record,
    post_job,
)
from agents.robust import robust_average, score_groups
from agents.state import StateFile, write_atomic
from agents.tabular import Table
from agents.training import evaluate, evaluate_regression
from agents.trust import Trust, TrustError, sha256_of
from crypto import BuyerKeys, DecryptedAggregate, PollenError, decrypt_aggregate_file
from crypto.identity import IdentityKey, verify_record
from dataspec.jobs import JobCreate
from dataspec.states import ROUND_HAS_AGGREGATE, JobState, RoundState
from dataspec.views import JobPublic, RoundPublic

__all__ = [
    "BuyerRun",
    "JobEndedError",
    "JobOutcome",
    "RoundReport",
    "buyer_identity",
    "ensure_registered",
    "initial_model_bytes",
    "model_record",
    "post_job",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RoundReport:
    """One round's evaluation on the buyer's held-out data: accuracy for a classification;
    RMSE, MAE and R² (target units) for a regression; the training loss for both."""

    round: int
    accuracy: float | None
    loss: float
    providers: int
    samples: int
    seconds: float
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None

    def metrics(self) -> dict[str, float]:
        """What the server records for the round (only the measures this task has)."""
        named = {"accuracy": self.accuracy, "rmse": self.rmse, "mae": self.mae, "r2": self.r2}
        named["loss"] = self.loss
        return {k: float(v) for k, v in named.items() if v is not None}

    def describe(self) -> str:
        if self.accuracy is not None:
            head = f"accuracy {self.accuracy:.4f}"
        else:
            head = f"RMSE {self.rmse:.4g}  MAE {self.mae:.4g}  R² {self.r2:.4f}"
        return f"{head}  loss {self.loss:.4f}"


@dataclass
class JobOutcome:
    job_id: str
    state: str
    reports: list[RoundReport] = field(default_factory=list)
    model_path: Path | None = None
    metrics_path: Path | None = None


class JobEndedError(PollenError):
    """The job was cancelled or failed: there is nothing left for the buyer to run."""


class BuyerRun:
    """Drives one job from `running` to `completed`; resumable from its state file."""

    def __init__(
        self,
        client: PollenClient,
        keys: BuyerKeys,
        job_id: str,
        test: Dataset | Table,
        *,
        out_dir: Path,
        optimizer: str = "fedavg",
        notify: Callable[[str], None] | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
        on_collecting: Callable[[RoundPublic], None] | None = None,
        poll_s: float = 0.5,
        backoff: Backoff | None = None,
        identity: IdentityKey | None = None,
    ) -> None:
        self.client = client
        # The buyer signs every round's model and checks the log: the server's key pinned,
        # every head consistent with the last one it verified, the aggregate and the group
        # sums the signed round-closed record names. Without an identity given, the key is
        # made on first use in `out_dir` (0600) and registered before it first signs.
        self.identity: IdentityKey = (
            identity
            if identity is not None
            else IdentityKey.load_or_create(out_dir / "identity.key")
        )
        self.trust: Trust = Trust(out_dir / f"{job_id}.trust.json")
        self.keys = keys
        self.job_id = job_id
        self.out_dir = out_dir
        self.state = StateFile(out_dir / f"{job_id}.state.json")
        self.notify = notify or (lambda m: logger.info("%s", m))
        self.on_round = on_round
        # Called with the server's view of the round each time it is polled while collecting.
        self.on_collecting = on_collecting
        self.poll_s = poll_s
        self.backoff = backoff or Backoff(first_wait_s=max(poll_s, 0.1), notify=self.notify)
        job = self.backoff.call(client.get_job, job_id)
        self.spec: JobCreate = job.spec
        self.rounds_total = job.rounds_total
        schema = self.spec.dataset_schema
        self.test = prepare(test, schema)
        self.model = build_model(self.spec.model, schema.n_features, schema.n_classes, seed=0)
        self.optimizer: ServerOptimizer = make_server_optimizer(
            self.state.get("optimizer", optimizer)
        )
        self.state.data.setdefault("optimizer", optimizer)
        if self.state.get("optimizer_state"):
            self.optimizer.load_state_dict(self.state.get("optimizer_state"))

    @property
    def model_path(self) -> Path:
        return self.out_dir / f"{self.job_id}.model.safetensors"

    def _wait(self, predicate: Callable[[], T | None], what: str) -> T:
        logger.debug("waiting for %s", what)
        while True:
            result = self.backoff.call(predicate)
            if result is not None:
                return result
            time.sleep(self.poll_s)

    def _job_if_running(self) -> JobPublic | None:
        job = self.client.get_job(self.job_id)
        if job.state in (JobState.CANCELLED, JobState.FAILED):
            reason = job.failure_reason or "no reason recorded"
            raise JobEndedError(f"job {self.job_id} is {job.state} ({reason}); nothing to run")
        if job.state not in (JobState.RUNNING, JobState.COMPLETED):
            self._note_waiting(job)
            return None
        return job

    def _note_waiting(self, job: JobPublic) -> None:
        """Say, once per change, how far the job is from starting (providers accepted)."""
        accepted = len(job.accepted_providers)
        note = (
            f"job {self.job_id} is {job.state}: {accepted} of "
            f"{job.spec.min_providers} providers needed have accepted"
        )
        if note != getattr(self, "_last_note", None):
            self._last_note = note
            self.notify(note + " (pollen job status shows why listings are left out)")

    def apply_round(self, number: int) -> RoundReport:
        """Decrypt round `number`'s sum and step from that round's global model.

        The starting point is the model the server holds for the round, not the local model
        file: after a crash between writing that file and saving the state, the file already
        holds this round's result, and stepping from it would apply the round twice.
        """
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pollen-sums-") as folder:
            agg, sums = self._decrypt_sums(number, Path(folder))
        start = flatten(self.model)
        scores = score_groups(self.model, start, sums, self.test)
        for s in scores:
            if s.excluded:
                self.notify(f"job {self.job_id} round {number}: group {s.index}: {s.reason}")
        self.state.section("group_scores")[str(number)] = [s.as_json() for s in scores]
        weights = self.optimizer.step(start, robust_average(agg, sums, scores))
        unflatten_into(self.model, weights)
        # The model first, then the state that says it is done: a crash in between only
        # makes a restart redo this round from the same inputs.
        write_atomic(self.model_path, self._model_file())
        report = self._evaluate(number, agg.count, agg.samples_sum, started)
        self.state.section("rounds")[str(number)] = report.__dict__
        self.state.data["applied"] = number
        self.state.data["optimizer_state"] = self.optimizer.state_dict()
        self.state.save()
        return report

    def _model_file(self) -> bytes:
        """The model as safetensors with its contract (schema, preprocessing, classes)."""
        from agents.contract import Contract, model_bytes

        return model_bytes(self.model, Contract.from_spec(self.job_id, self.spec))

    def _evaluate(self, number: int, providers: int, samples: int, started: float) -> RoundReport:
        label = self.spec.dataset_schema.label
        if label.classes is None:
            reg = evaluate_regression(self.model, self.test, offset=label.offset, scale=label.scale)
            return RoundReport(
                number, None, reg.loss, providers, samples, time.perf_counter() - started,
                rmse=reg.rmse, mae=reg.mae, r2=reg.r2,
            )  # fmt: skip
        result = evaluate(self.model, self.test)
        return RoundReport(
            number, result.accuracy, result.loss, providers, samples,
            time.perf_counter() - started,
        )  # fmt: skip

    def _decrypt_sums(
        self, number: int, folder: Path
    ) -> tuple[DecryptedAggregate, dict[int, DecryptedAggregate]]:
        """Round `number`'s sum and its groups' sums, each downloaded into `folder`, checked
        against the signed round-closed record and decrypted from its file (the round's
        model is loaded in between, as the step starts from it)."""
        blob = folder / "aggregate"
        self.client.download_aggregate(self.job_id, number, blob)
        self._check_aggregate(number, blob)
        agg = decrypt_aggregate_file(self.keys, blob)
        load_safetensors(self.model, self.client.get_round_model(self.job_id, number))
        served: dict[int, Path] = {}
        for g in self._released_groups(number):
            served[g] = folder / f"group-{g}"
            self.client.download_group_aggregate(self.job_id, number, g, served[g])
        self.trust.check_group_sums(self.client, self.job_id, number, served)
        sums = {g: decrypt_aggregate_file(self.keys, path) for g, path in served.items()}
        return agg, sums

    def _check_aggregate(self, number: int, blob: bytes | Path) -> None:
        """The aggregate is the one the server's signed round-closed record commits to."""
        key = self.trust.server_key(self.client)
        closes = [
            verify_record(r.record, key, kind="round-closed")
            for r in self.client.job_records(self.job_id)
            if r.kind == "round-closed"
        ]
        mine = [c for c in closes if c["round"] == number]
        if not mine or mine[-1]["aggregate_sha256"] != sha256_of(blob):
            raise TrustError(
                f"job {self.job_id} round {number}: the aggregate served is not the one the "
                "server's signed round-closed record names"
            )

    def _released_groups(self, number: int) -> list[int]:
        """The groups of a closed round whose sums the buyer may decrypt."""
        rnd = self.client.get_round(self.job_id, number)
        return sorted(g.index for g in rnd.groups if g.merged_into is None and g.count > 0)

    def _report_groups(self, number: int) -> None:
        """Send round `number`'s group values once (a resent copy is recorded once)."""
        scores = self.state.section("group_scores").get(str(number))
        if scores and int(self.state.get("groups_reported", 0)) < number:
            self.client.post_group_values(self.job_id, number, scores)
            self.state.data["groups_reported"] = number
            self.state.save()

    def run(self) -> JobOutcome:
        self._wait(self._job_if_running, "the job to start")
        outcome = JobOutcome(self.job_id, JobState.RUNNING)
        while not self.backoff.call(self._advance):
            time.sleep(self.poll_s)
        self.backoff.call(self._finish, outcome)
        return outcome

    def _advance(self) -> bool:
        """One step towards the end of the job, chosen from what the server and the state
        file say now; safe to repeat after any failure. True once every round is applied
        and published."""
        job = self._job_if_running()
        self.trust.check_head(self.client)
        if job is None:
            return False
        if job.state == JobState.COMPLETED:
            return True
        applied = int(self.state.get("applied", 0))
        current = job.current_round
        if applied < current:
            if self._closed(applied + 1) is None:
                return False
            self.apply_round(applied + 1)
            applied += 1
        self._report_groups(applied)
        if int(self.state.get("reported", 0)) < applied:
            report = RoundReport(**self.state.section("rounds")[str(applied)])
            self.client.post_metrics(self.job_id, applied, report.metrics())
            self.state.data["reported"] = applied
            self.state.save()
            if self.on_round:
                self.on_round(report)
        if applied >= self.rounds_total:
            return True
        if current == applied:
            # The server still runs the round we applied: the next one is ours to open.
            # Checked against the server each time, so a publication whose answer was lost
            # is never sent twice.
            model = self.model_path.read_bytes()
            # Signed first: a provider seeing the model can always find its signature.
            if not self.state.get("identity_registered"):
                ensure_registered(self.client, self.identity)
                self.state.data["identity_registered"] = self.identity.fingerprint
                self.state.save()
            record = model_record(self.identity, self.job_id, applied + 1, model)
            self.client.post_record(self.job_id, record)
            self.client.publish_model(self.job_id, applied + 1, model)
            self.notify(f"job {self.job_id}: published the model of round {applied + 1}")
        return False

    def _closed(self, number: int) -> RoundPublic | None:
        self._job_if_running()
        rnd = self.client.get_round(self.job_id, number)
        if rnd.state in ROUND_HAS_AGGREGATE:
            return rnd
        if self.on_collecting is not None and rnd.state == RoundState.COLLECTING:
            self.on_collecting(rnd)
        return None

    def _finish(self, outcome: JobOutcome) -> None:
        job = self.client.get_job(self.job_id)
        if job.state != JobState.COMPLETED:
            self.client.put_final_model(self.job_id, self.model_path.read_bytes())
            job = self.client.complete_job(self.job_id)
        outcome.state = job.state
        outcome.model_path = self.model_path
        outcome.metrics_path = self.out_dir / f"{self.job_id}.metrics.csv"
        rounds = self.state.section("rounds")
        reports = [RoundReport(**rounds[key]) for key in sorted(rounds, key=int)]
        columns = ["round", *reports[0].metrics(), "providers", "samples"] if reports else []
        with outcome.metrics_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in reports:
                m = r.metrics()
                writer.writerow(
                    [r.round, *(f"{m[k]:.6f}" for k in columns[1:-2]), r.providers, r.samples]
                )
                outcome.reports.append(r)
