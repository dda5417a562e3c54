"""The provider agent: trains on local data that never leaves, returns encrypted updates.

One agent owns one dataset and one listing. It polls the marketplace, accepts offers that
meet its policy, and for every round it is expected in: fetches the global model, trains
locally with torch (DP-SGD by default: record-level differential privacy at the ε its
`PrivacyPolicy` allows, see agents.privacy), computes `delta = w_local - w_r`, weights it,
optionally clips and noises the whole update too (update-level DP), encrypts it under the
buyer's public context and submits the envelope, then reports the ε it has spent on the job.
It declines offers whose privacy requirement its policy refuses, and stops working for a job
rather than train a round that would take it past the job's ε.

Every step that matters is recorded in a local state file first, so that a restart after kill -9
resumes without ever submitting twice: an envelope is written to disk before it is sent, and re-
sent byte for byte after a crash (the server answers 409 with the first result if it had already
accepted it). While the server is down or restarting the agent waits with backoff (`Backoff`)
and says so; it gives up only after `give_up_after_s`.

Which offers the agent takes is agents.offers and how a round's envelope is made is
agents.sealing; this module keeps the loop, the state file and the upload."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from agents.client import ApiError, Backoff, PollenClient
from agents.data import DataError, Dataset
from agents.offers import AgentPolicy, answer_offers, unfit_reason
from agents.privacy import PrivacyPolicy
from agents.progress import AgentProgress, NullAgentProgress, steps_of
from agents.sealing import BudgetSpentError, Sealer, header_signature, report_privacy
from agents.state import StateFile, write_atomic_with
from agents.table_schema import listing_schema
from agents.tabular import Table
from agents.training import EpochInfo, warm_up
from agents.trust import Trust, TrustError, register_identity, sha256_of
from crypto import PublicContext
from crypto.identity import IdentityKey
from dataspec.jobs import JobCreate
from dataspec.states import JOB_ENDED, JobState, RoundState
from dataspec.views import JobPublic, RoundPublic, SubmissionReceipt

if TYPE_CHECKING:
    from agents.privacy import DPConfig
    from dataspec import DatasetSchema as ListingSchema

__all__ = ["AgentPolicy", "ProviderAgent"]

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


def _own_identity(state_dir: Path) -> IdentityKey:
    """The agent's identity key when none is given: made on first use in the state
    directory (0600), never skipped."""
    return IdentityKey.load_or_create(state_dir / "identity.key")


class ProviderAgent:
    """One provider: its listing, the offers it takes, and its rounds of those jobs.

    The agent signs its envelopes and trusts nothing unsigned: the buyer's key is pinned (or
    `trust_buyer`, a fingerprint, given up front), and a context or model that does not
    match the buyer's signed manifest is refused. `data` is kept as read (a Table keeps
    text, categories and missing cells for the job's preprocessing; a numeric Dataset brings
    its own label name). Record-level DP is on unless `privacy` opts out with
    PrivacyPolicy(max_epsilon=None); `progress` draws training, encryption and upload as
    they happen (agents.progress)."""

    def __init__(
        self,
        client: PollenClient,
        data: Dataset | Table,
        *,
        label: str | None = None,
        state_dir: Path,
        listing_name: str,
        ask_cents: int,
        currency: str = "usd",
        capacity: int = 1,
        policy: AgentPolicy | None = None,
        privacy: PrivacyPolicy | None = None,
        dp: DPConfig | None = None,
        seed: int = 0,
        notify: Notify | None = None,
        on_epoch: Callable[[EpochInfo], None] | None = None,
        identity: IdentityKey | None = None,
        trust_buyer: str | None = None,
        progress: AgentProgress | None = None,
    ) -> None:
        self.client = client
        self.identity = identity if identity is not None else _own_identity(state_dir)
        self.trust: Trust = Trust.in_dir(state_dir)
        self.data = data
        self.label = label or (data.label_name if isinstance(data, Dataset) else "label")
        self.state_dir = state_dir
        self.state = StateFile(state_dir / "agent-state.json")
        self.listing_name = listing_name
        self.ask_cents = ask_cents
        self.currency = currency
        self.capacity = capacity
        self.policy = policy or AgentPolicy()
        self.privacy = privacy if privacy is not None else PrivacyPolicy()
        self.notify = notify or (lambda msg: logger.info("%s", msg))
        self.progress: AgentProgress = progress or NullAgentProgress()
        self.sealer = Sealer(
            client=client,
            trust=self.trust,
            trust_buyer=trust_buyer,
            state_dir=state_dir,
            state=self.state,
            privacy=self.privacy,
            dp=dp,
            seed=seed,
            notify=self.notify,
            on_epoch=on_epoch,
            progress=self.progress,
        )

    # ------------------------------------------------------------------ listing & offers

    def _table(self) -> Table:
        return Table.from_dataset(self.data) if isinstance(self.data, Dataset) else self.data

    def schema(self, classes: list[int] | None = None) -> ListingSchema:
        """What the listing says about the local data (column kinds, missing, classes)."""
        return listing_schema(self._table(), self.label, classes=classes)

    def cannot_serve(self, spec: JobCreate) -> str | None:
        """Why this agent's data cannot train the job ``spec`` describes (None: it can)."""
        return unfit_reason(self.data, self.label, spec)

    def claimed_samples(self, rows: int) -> int:
        """How many samples the agent says it has, in its listing and envelopes: its rows.
        (The fairness benchmark overrides it to play a provider that inflates its claim.)"""
        return rows

    def ensure_listing(self, classes: list[int] | None = None) -> str:
        """Publish the listing once; afterwards keep its id in the state file."""
        listing_id = self.state.get("listing_id")
        if listing_id:
            return str(listing_id)
        schema = self.schema(classes)
        body = {
            "name": self.listing_name,
            "schema": schema.model_dump(exclude_none=True),
            "samples": self.claimed_samples(len(self.data)),
            "ask_cents": self.ask_cents,
            "currency": self.currency,
            "capacity": self.capacity,
        }
        listing = self.client.create_listing(body)
        self.state.data["listing_id"] = listing.id
        self.state.save()
        self.notify(f"published listing {listing.id} ({len(self.data)} samples)")
        return str(listing.id)

    def _active_jobs(self) -> dict[str, Any]:
        return self.state.section("jobs")

    def handle_offers(self) -> None:
        answer_offers(
            self.client,
            self.state,
            policy=self.policy,
            privacy=self.privacy,
            unfit=self.cannot_serve,
            notify=self.notify,
        )

    # ------------------------------------------------------------------ rounds

    def _context(self, job_id: str) -> PublicContext:
        """The job's public context, checked against the buyer's signed manifest."""
        return self.sealer.context(job_id)

    def _envelope_path(self, job_id: str, round_number: int) -> Path:
        return self.state_dir / "envelopes" / f"{job_id}-r{round_number}.bin"

    def _build_envelope(self, job: JobPublic, rnd: RoundPublic, me: str) -> bytes:
        """The round's envelope in memory (see `_write_envelope`)."""
        out = io.BytesIO()
        self._write_envelope(job, rnd, me, out)
        return out.getvalue()

    def _write_envelope(
        self, job: JobPublic, rnd: RoundPublic, me: str, out: BinaryIO
    ) -> dict[str, float]:
        """Train on the round's model and write the encrypted update to `out`; returns the
        seconds spent per phase (train, encode, encrypt)."""
        return self.sealer.write(job, rnd, me, out, data=self.data, claimed=self.claimed_samples)

    def work_round(self, job_id: str, me: str) -> bool:
        """Do this job's current round if it is ours to do; True if something was sent."""
        entry = self._active_jobs()[job_id]
        job = self.client.get_job(job_id)
        sent = self._send_unrecorded(job, entry, me)
        if job.state in JOB_ENDED:
            self._end_job(job, entry)
            return sent
        rnd = self._round_to_work(job, entry, me)
        if rnd is None:
            return sent
        if not self._prepare_envelope(job, rnd, me, self._envelope_path(job_id, rnd.round), entry):
            return sent
        return self._send_unrecorded(job, entry, me)

    def _send_unrecorded(self, job: JobPublic, entry: dict[str, Any], me: str) -> bool:
        """Send each envelope of the job on disk with no answer recorded, byte for byte: just
        prepared, prepared before a crash, or sent and its answer lost (the round it closed
        may be over, the job too). The server answers with the first receipt if it has the
        update, else says the round is over; both are recorded. True if one was sent."""
        sent = False
        for path in sorted((self.state_dir / "envelopes").glob(f"{job.id}-r*.bin")):
            number = int(path.stem.rsplit("-r", 1)[1])
            if str(number) in entry["submitted"]:
                path.unlink(missing_ok=True)  # a spare copy: its answer is recorded
                continue
            receipt = self._upload(job.id, number, me, path, entry)
            if receipt is not None:
                self._record_submission(job, number, path, entry, receipt)
                sent = True
        return sent

    def _end_job(self, job: JobPublic, entry: dict[str, Any]) -> None:
        self.sealer.pools.drop(job.id)
        entry["done"] = True
        entry["final_state"] = job.state
        self.state.save()
        self.notify(f"job {job.id} is {job.state}")

    def _round_to_work(self, job: JobPublic, entry: dict[str, Any], me: str) -> RoundPublic | None:
        """The job's current round if it expects an update from us that it has not got."""
        if job.state != JobState.RUNNING or not job.current_round:
            return None
        number = int(job.current_round)
        if str(number) in entry["submitted"]:
            return None
        rnd = self.client.get_round(job.id, number)
        if rnd.state != RoundState.COLLECTING or me not in rnd.expected_providers:
            return None
        if rnd.you_submitted:
            # Accepted before a crash cut the answer off: record it, drop the spare copy.
            entry["submitted"][str(number)] = "accepted-earlier"
            self.state.save()
            self._envelope_path(job.id, number).unlink(missing_ok=True)
            return None
        return rnd

    def _prepare_envelope(
        self, job: JobPublic, rnd: RoundPublic, me: str, path: Path, entry: dict[str, Any]
    ) -> bool:
        """Write the round's envelope to `path`; False when the job is not to be worked."""
        number = rnd.round
        if entry.get("budget_spent"):
            return False
        try:
            with steps_of(self.progress, job.id, number):
                timings = write_atomic_with(
                    path, lambda out: self._write_envelope(job, rnd, me, out)
                )
            # Seconds per phase, kept with the job (an upload cut short is retried later).
            entry.setdefault("timings", {})[str(number)] = timings
            self.state.save()
        except TrustError as exc:
            self._refuse(job.id, entry, exc)
            return False
        except BudgetSpentError as exc:
            entry["budget_spent"] = str(exc)
            self.state.save()
            self.notify(f"job {job.id} round {number}: privacy budget spent, stopping: {exc}")
            return False
        except DataError as exc:
            # The data changed since the offer was accepted: retrying every round would
            # fail the same way, so stop working for this job and say why.
            self._give_up(job.id, entry, f"the local data no longer fits the job: {exc}")
            return False
        return True

    def _upload(
        self, job_id: str, number: int, me: str, path: Path, entry: dict[str, Any]
    ) -> SubmissionReceipt | None:
        """Send the signed envelope at `path`; the server's receipt (the first one for a
        resent envelope), or None when the round closed before it arrived."""
        # The server checks the signature against the registered key: register it first
        # (once; a no-op when the trust file says it is registered).
        self.ensure_registered(me)
        signature = header_signature(path, self.identity)
        size = path.stat().st_size
        self.progress.uploading(job_id, number, size=size)
        tick = time.perf_counter()
        try:
            # Streamed from the file: the agent never holds the whole envelope in memory.
            with steps_of(self.progress, job_id, number):
                receipt = self.client.submit(job_id, number, path, signature=signature)
            self.progress.uploaded(job_id, number, size=size)
        except ApiError as exc:
            if exc.status == 409 and exc.code == "duplicate-submission":
                # Accepted before (its answer was lost): the first receipt, checked as any.
                receipt = SubmissionReceipt.model_validate(exc.body.get("first", exc.body))
            elif exc.status == 409 and exc.code in ("round-not-collecting", "invalid-state"):
                # Too late (the round closed at its deadline while we trained or the server
                # was away): nothing was added, so drop this update and wait for the next.
                entry.setdefault("missed", {})[str(number)] = exc.detail
                self.state.save()
                path.unlink(missing_ok=True)
                self.notify(f"job {job_id} round {number}: too late, {exc.detail}")
                return None
            else:
                raise
        timings = entry.get("timings", {}).get(str(number))
        if timings is not None:
            timings["upload"] = time.perf_counter() - tick  # the attempt that landed
            logger.info("job %s round %d seconds per phase: %s", job_id, number, timings)
        return receipt

    def _record_submission(
        self,
        job: JobPublic,
        number: int,
        path: Path,
        entry: dict[str, Any],
        receipt: SubmissionReceipt,
    ) -> None:
        """Note the round as sent, start on the next one's zeros, keep the receipt."""
        entry["submitted"][str(number)] = sha256_of(path)
        self.state.save()
        path.unlink(missing_ok=True)
        if job.state not in JOB_ENDED:
            self.sealer.prefill(job)
        self.trust.check_receipt(self.client, job.id, number, receipt)
        spent = f", ε spent {float(entry['epsilon']):.3f}" if "epsilon" in entry else ""
        self.notify(
            f"job {job.id} round {number}: submitted ({receipt.payload_sha256[:12]}){spent}"
        )
        report_privacy(self.client, job.id, number, entry)

    def _give_up(self, job_id: str, entry: dict[str, Any], reason: str) -> None:
        entry["done"] = True
        entry["final_state"] = "abandoned"
        entry["abandoned"] = reason
        self.state.save()
        logger.warning("job %s: %s", job_id, reason)
        self.notify(f"job {job_id}: stopped, {reason}")

    def _refuse(self, job_id: str, entry: dict[str, Any], exc: TrustError) -> None:
        """Stop working for a job the marketplace tampered with; loudly, sending nothing."""
        entry["refused"] = exc.message
        entry["done"] = True
        self.state.save()
        logger.error("REFUSED job %s: %s", job_id, exc.message)
        self.notify(f"REFUSED job {job_id}: {exc.message}")

    def ensure_registered(self, me: str) -> None:
        """Register the identity key with the account once (first use); a different key
        already registered is refused loudly (TrustError)."""
        if self.trust.data.get("registered") == [me, self.identity.fingerprint]:
            return
        register_identity(self.client, self.identity, me)
        self.trust.data["registered"] = [me, self.identity.fingerprint]
        self.trust.save()
        self.notify(f"identity key {self.identity.fingerprint[:16]}… registered")

    def step(self, me: str) -> None:
        self.ensure_registered(me)
        self.trust.check_head(self.client)
        self.handle_offers()
        for job_id, entry in list(self._active_jobs().items()):
            if not entry.get("done"):
                self.work_round(job_id, me)

    def finished_jobs(self) -> int:
        return sum(1 for j in self._active_jobs().values() if j.get("done"))

    def run(
        self,
        *,
        poll_s: float = 1.0,
        exit_after_jobs: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """Poll and work until `exit_after_jobs` jobs ended; ride out server outages.

        Every step re-derives what to do from the server and the state file, so a step cut
        short by a dropped connection is simply done again once the server answers.
        """
        backoff = backoff or Backoff(first_wait_s=poll_s, notify=self.notify)
        warm_up()
        me = str(backoff.call(self.client.me).id)
        backoff.call(self.ensure_registered, me)
        while True:
            backoff.call(self.step, me)
            if exit_after_jobs is not None and self.finished_jobs() >= exit_after_jobs:
                return
            time.sleep(poll_s)
