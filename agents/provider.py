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
and says so; it gives up only after `give_up_after_s`."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch

from agents.client import ApiError, Backoff, PollenClient
from agents.data import DataError, Dataset, prepare
from agents.modelio import flatten, load_safetensors
from agents.models import build_model
from agents.privacy import DPPlan, PrivacyDeclinedError, PrivacyPolicy, plan_record_dp
from agents.progress import AgentProgress, NullAgentProgress, steps_of
from agents.state import StateFile, write_atomic
from agents.table_schema import listing_schema
from agents.tabular import Table
from agents.training import EpochInfo, RecordDP, compute_update, train_local
from agents.trust import Trust, TrustError, register_identity, sha256_of
from crypto import EnvelopeBinding, PublicContext, read_header, update_weight
from crypto.envelope import write_update
from crypto.identity import IdentityKey, SignatureError, verify_record
from crypto.zeropool import ZeroPool
from dataspec.jobs import JobCreate
from dataspec.states import JOB_ENDED, JobState, OfferState, RoundState
from dataspec.views import JobPublic, RoundPublic, SubmissionReceipt

if TYPE_CHECKING:
    from agents.privacy import DPConfig
    from dataspec import DatasetSchema as ListingSchema

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


@dataclass(frozen=True)
class AgentPolicy:
    """When the agent says yes to an offer."""

    min_price_cents: int = 0
    max_concurrent_jobs: int = 1


class BudgetSpentError(Exception):
    """One more round would take a job past the ε this provider agreed to."""


# An envelope's header is at most a few hundred bytes plus three 256-byte identifiers.
_MAX_HEADER = 4096


def train_seed(job_seed: int, round_number: int, agent_seed: int) -> int:
    """The seed of one local training run; the plaintext baseline uses the same formula."""
    return job_seed * 1_000_003 + (round_number - 1) * 1009 + agent_seed


def warm_up() -> None:
    """Pay torch's one-off start-up cost now rather than inside the first round's deadline:
    the first optimizer built in a process imports torch's compiler stack, which takes
    seconds on a busy machine."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class ProviderAgent:
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
        # The agent signs its envelopes and trusts nothing unsigned: the buyer's key is
        # pinned (or `trust_buyer`, a fingerprint, given up front), and a context or model
        # that does not match the buyer's signed manifest is refused. Without an identity
        # given, the key is made on first use in the state directory (0600), never skipped.
        self.identity: IdentityKey = (
            identity
            if identity is not None
            else IdentityKey.load_or_create(state_dir / "identity.key")
        )
        self.trust_buyer = trust_buyer
        self.trust: Trust = Trust.in_dir(state_dir)
        self._manifests: dict[str, dict[str, Any]] = {}
        # The data as read (a Table keeps text, categories and missing cells for the job's
        # preprocessing); a numeric Dataset brings its own label name.
        self.data = data
        self.label = label or (data.label_name if isinstance(data, Dataset) else "label")
        self.state_dir = state_dir
        self.state = StateFile(state_dir / "agent-state.json")
        self.listing_name = listing_name
        self.ask_cents = ask_cents
        self.currency = currency
        self.capacity = capacity
        self.policy = policy or AgentPolicy()
        # Record-level DP is on unless the caller opts out with PrivacyPolicy(max_epsilon=None).
        self.privacy = privacy if privacy is not None else PrivacyPolicy()
        self.dp = dp
        self.seed = seed
        self.notify = notify or (lambda msg: logger.info("%s", msg))
        self.on_epoch = on_epoch
        # Training, encryption and upload as they happen (agents.progress draws them).
        self.progress: AgentProgress = progress or NullAgentProgress()
        self._contexts: dict[str, PublicContext] = {}
        # Per job: encryptions of zero for its next round, made while the agent waits (in
        # memory only, each used once: crypto.zeropool).
        self._pools: dict[str, ZeroPool] = {}

    # ------------------------------------------------------------------ listing & offers

    def _table(self) -> Table:
        return Table.from_dataset(self.data) if isinstance(self.data, Dataset) else self.data

    def schema(self, classes: list[int] | None = None) -> ListingSchema:
        """What the listing says about the local data (column kinds, missing, classes)."""
        return listing_schema(self._table(), self.label, classes=classes)

    def cannot_serve(self, spec: JobCreate) -> str | None:
        """Why this agent's data cannot train the job ``spec`` describes (None: it can).

        Checked before accepting, against the data as it is now (not as the listing said
        when it was published), so a changed file is declined up front instead of crashing
        in every round."""
        from dataspec import incompatibility

        try:
            schema = spec.dataset_schema
            reason = incompatibility(schema, self.schema())
            if reason is not None:
                return f"the local data does not fit the job's schema: {reason}"
            prepared = prepare(self.data, schema)
            build_model(spec.model, schema.n_features, schema.n_classes, seed=0)
        except (DataError, ValueError, KeyError) as exc:
            return f"cannot apply the job's preprocessing: {exc}"
        if len(prepared) == 0:
            return "no rows"
        return None

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
        jobs = self._active_jobs()
        for offer in self.client.list_offers():
            if offer.state == OfferState.ACCEPTED and offer.job_id not in jobs:
                # Accepted by an earlier life whose answer never arrived (crash, lost
                # response): the server counts on us, so take the job up.
                jobs[offer.job_id] = {"offer_id": offer.id, "submitted": {}, "done": False}
                self.state.save()
                self.notify(f"resuming job {offer.job_id} (offer accepted earlier)")
                continue
            if offer.state != OfferState.PENDING:
                continue
            busy = sum(1 for j in jobs.values() if not j.get("done"))
            price = offer.price_cents
            if price < self.policy.min_price_cents or busy >= self.policy.max_concurrent_jobs:
                self.client.decline_offer(offer.id)
                self.notify(f"declined offer {offer.id} (price {price}, busy {busy})")
                continue
            job_spec = self.client.get_job(offer.job_id).spec
            unfit = self.cannot_serve(job_spec)
            if unfit is not None:
                self.client.decline_offer(offer.id)
                logger.warning("declined offer %s: %s", offer.id, unfit)
                self.notify(f"declined offer {offer.id} for job {offer.job_id}: {unfit}")
                continue
            try:
                self.privacy.target_for(_privacy(job_spec))
            except PrivacyDeclinedError as exc:
                self.client.decline_offer(offer.id)
                self.notify(f"declined offer {offer.id}: {exc}")
                continue
            self.client.accept_offer(offer.id)
            jobs[offer.job_id] = {"offer_id": offer.id, "submitted": {}, "done": False}
            self.state.save()
            self.notify(f"accepted offer for job {offer.job_id} at {price} cents/round")

    # ------------------------------------------------------------------ rounds

    def _manifest(self, job: JobPublic) -> dict[str, Any]:
        """The job's signed manifest, verified against the pinned buyer key."""
        if job.id not in self._manifests:
            self._manifests[job.id] = self.trust.manifest(self.client, job, self.trust_buyer)
        return self._manifests[job.id]

    def _context(self, job_id: str) -> PublicContext:
        if job_id not in self._contexts:
            path = self.state_dir / "contexts" / f"{job_id}.ctx"
            if not path.exists():
                served = self.client.get_context(job_id)
                manifest = self._manifests.get(job_id)
                if manifest is None:
                    raise TrustError(f"job {job_id}: no verified manifest for its context")
                self.trust.check_context(manifest, served)
                write_atomic(path, served)
            self._contexts[job_id] = PublicContext.from_bytes(path.read_bytes())
        return self._contexts[job_id]

    def _envelope_path(self, job_id: str, round_number: int) -> Path:
        return self.state_dir / "envelopes" / f"{job_id}-r{round_number}.bin"

    def _pool(self, job: JobPublic) -> ZeroPool | None:
        """The job's pool of zeros (None for a plaintext job or before its context is here)."""
        ctx = self._contexts.get(job.id)
        if ctx is None or job.param_count is None:
            return None
        ctx = ctx.for_preset(job.spec.preset)
        if ctx.preset.is_plain:
            return None
        pool = self._pools.get(job.id)
        if pool is None:
            pool = ZeroPool(ctx, ctx.preset.chunks_for(job.param_count))
            self._pools[job.id] = pool
        return pool

    def _prefill(self, job: JobPublic) -> None:
        """Make the next round's encryptions of zero in the background while waiting."""
        pool = self._pool(job)
        if pool is not None:
            pool.start_filling()

    def _drop_pool(self, job_id: str) -> None:
        pool = self._pools.pop(job_id, None)
        if pool is not None:
            pool.stop()

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
        spec = job.spec
        schema = spec.dataset_schema
        local = prepare(self.data, schema)
        number = rnd.round
        model = build_model(spec.model, schema.n_features, schema.n_classes, seed=0)
        served = self.client.get_round_model(job.id, number)
        manifest = self._manifest(job)
        self.trust.check_model(self.client, manifest, number, served)
        # The context is checked before any training, too: a refusal costs nothing.
        self._context(job.id)
        load_safetensors(model, served)
        global_vec = flatten(model)
        entry = self._active_jobs()[job.id]
        plan = self._dp_plan(entry, spec, len(local))
        record_dp = None
        if plan is not None:
            spent = int(entry.get("dp_steps", 0))
            if not plan.allows(spent):
                raise BudgetSpentError(
                    f"one more round would take ε from {plan.epsilon_after(spent):.3f} past "
                    f"{plan.epsilon:g}"
                )
            record_dp = RecordDP(plan.noise_multiplier, plan.clip)  # noise from os.urandom
        self.notify(
            f"job {job.id} round {number}: training on {len(local)} samples "
            f"({spec.local_epochs} epochs"
            + (
                f", DP-SGD σ={plan.noise_multiplier:.3f} toward ε={plan.epsilon:g})"
                if plan
                else ", no DP)"
            )
        )
        epochs = spec.local_epochs
        self.progress.training(job.id, number, epochs=epochs, samples=len(local))

        def on_epoch(info: EpochInfo) -> None:
            self.progress.epoch(job.id, number, info)
            if self.on_epoch is not None:
                self.on_epoch(info)

        timings: dict[str, float] = {}
        tick = time.perf_counter()
        result = train_local(
            model,
            local,
            epochs=spec.local_epochs,
            lr=spec.learning_rate,
            batch_size=spec.batch_size,
            seed=train_seed(spec.seed, number, self.seed),
            progress=on_epoch,
            dp=record_dp,
        )
        delta = compute_update(global_vec, flatten(model))
        timings["train"] = time.perf_counter() - tick
        if plan is not None:
            # Charged before the update can leave: a crash from here on re-trains and pays
            # again (safe), never releases a round it did not pay for.
            entry["dp_steps"] = int(entry.get("dp_steps", 0)) + result.dp_steps
            entry["epsilon"] = plan.epsilon_after(entry["dp_steps"])
            entry["dp_delta"] = plan.delta
            self.state.save()
        if self.dp is not None:
            from agents.privacy import epsilon_spent, privatize

            rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
            delta = privatize(delta, self.dp, rng)
            entry["dp_rounds"] = int(entry.get("dp_rounds", 0)) + 1
            entry["update_epsilon"] = epsilon_spent(self.dp, entry["dp_rounds"])
            self.state.save()
        samples = min(self.claimed_samples(len(local)), spec.sample_cap)
        weight = update_weight(samples, rnd.weight_norm)
        if job.param_count is None:
            raise TrustError(f"job {job.id} round {number}: the server names no model size")
        binding = EnvelopeBinding(job.id, number, me, job.param_count, rnd.summands)
        self.progress.encrypting(job.id, number, params=len(delta))
        ctx = self._context(job.id).for_preset(spec.preset)
        size = write_update(
            out,
            ctx,
            delta,
            binding=binding,
            weight=weight,
            samples=samples,
            zeros=self._pool(job),
            timings=timings,
        )
        self.progress.encrypted(job.id, number, size=size)
        self.notify(
            f"job {job.id} round {number}: trained on {result.samples} samples, "
            f"loss {result.loss:.4f}, envelope {size / 1e6:.2f} MB"
        )
        return timings

    def _dp_plan(self, entry: dict[str, Any], spec: JobCreate, samples: int) -> DPPlan | None:
        """The job's DP-SGD plan, made once on its first round and kept in the state file."""
        if "dp_plan" in entry:
            return DPPlan.from_dict(entry["dp_plan"]) if entry["dp_plan"] else None
        target = self.privacy.target_for(_privacy(spec))
        plan = None
        if target is not None:
            plan = plan_record_dp(
                target,
                samples=samples,
                batch_size=spec.batch_size,
                epochs=spec.local_epochs,
                rounds=spec.rounds,
            )
        entry["dp_plan"] = plan.to_dict() if plan else None
        self.state.save()
        return plan

    def _report_privacy(self, job_id: str, number: int, entry: dict[str, Any]) -> None:
        """Tell the server (and so the buyer) the ε spent so far; only ε and δ travel."""
        if "epsilon" not in entry:
            return
        try:
            self.client.report_privacy(
                job_id, number, float(entry["epsilon"]), float(entry["dp_delta"])
            )
        except ApiError as exc:
            # The update is in; a refused report must not stop the agent (it retries with the
            # next round's figure, which covers this one).
            logger.warning("privacy report for job %s round %d refused: %s", job_id, number, exc)

    def work_round(self, job_id: str, me: str) -> bool:
        """Do this job's current round if it is ours to do; True if something was sent."""
        entry = self._active_jobs()[job_id]
        job = self.client.get_job(job_id)
        if job.state in JOB_ENDED:
            self._drop_pool(job_id)
            entry["done"] = True
            entry["final_state"] = job.state
            self.state.save()
            self.notify(f"job {job_id} is {job.state}")
            return False
        if job.state != JobState.RUNNING or not job.current_round:
            return False
        number = int(job.current_round)
        if str(number) in entry["submitted"]:
            return False
        rnd = self.client.get_round(job_id, number)
        if rnd.state != RoundState.COLLECTING or me not in rnd.expected_providers:
            return False
        path = self._envelope_path(job_id, number)
        if rnd.you_submitted:
            # Accepted before a crash cut the answer off: record it, drop the spare copy.
            entry["submitted"][str(number)] = "accepted-earlier"
            self.state.save()
            path.unlink(missing_ok=True)
            return False
        if not path.exists():  # else: prepared before a crash, send the same bytes
            if entry.get("budget_spent"):
                return False
            try:
                with steps_of(self.progress, job_id, number):
                    timings = self._write_file(job, rnd, me, path)
                # Seconds per phase, kept with the job (an upload cut short is retried later).
                entry.setdefault("timings", {})[str(number)] = timings
                self.state.save()
            except TrustError as exc:
                self._refuse(job_id, entry, exc)
                return False
            except BudgetSpentError as exc:
                entry["budget_spent"] = str(exc)
                self.state.save()
                self.notify(f"job {job_id} round {number}: privacy budget spent, stopping: {exc}")
                return False
            except DataError as exc:
                # The data changed since the offer was accepted: retrying every round would
                # fail the same way, so stop working for this job and say why.
                self._give_up(job_id, entry, f"the local data no longer fits the job: {exc}")
                return False
        with path.open("rb") as f:
            head = f.read(_MAX_HEADER)
        header = head[: read_header(head).header_len]
        body = {"header_sha256": hashlib.sha256(header).hexdigest()}
        # The server checks the signature against the registered key: register it first
        # (once; a no-op when the trust file says it is registered).
        self.ensure_registered(me)
        signature = self.identity.sign("envelope", body)
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
                receipt = exc.body.get("first", exc.body)
            elif exc.status == 409 and exc.code == "round-not-collecting":
                # Too late (the round closed at its deadline while we trained or the server
                # was away): nothing was added, so drop this update and wait for the next.
                entry.setdefault("missed", {})[str(number)] = exc.detail
                self.state.save()
                path.unlink(missing_ok=True)
                self.notify(f"job {job_id} round {number}: too late, {exc.detail}")
                return False
            else:
                raise
        timings = entry.get("timings", {}).get(str(number))
        if timings is not None:
            timings["upload"] = time.perf_counter() - tick  # the attempt that landed
            logger.info("job %s round %d seconds per phase: %s", job_id, number, timings)
        entry["submitted"][str(number)] = sha256_of(path)
        self.state.save()
        path.unlink(missing_ok=True)
        self._prefill(job)
        self._keep_receipt(job_id, number, receipt)
        spent = f", ε spent {float(entry['epsilon']):.3f}" if "epsilon" in entry else ""
        self.notify(
            f"job {job_id} round {number}: submitted ({receipt.payload_sha256[:12]}){spent}"
        )
        self._report_privacy(job_id, number, entry)
        return True

    def _write_file(
        self, job: JobPublic, rnd: RoundPublic, me: str, path: Path
    ) -> dict[str, float]:
        """Write the round's envelope to `path` atomically: all of it or nothing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w+b") as f:
                timings = self._write_envelope(job, rnd, me, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return timings

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

    def _keep_receipt(self, job_id: str, number: int, receipt: SubmissionReceipt) -> None:
        """Check the server's signed `accepted` record, and keep it for `pollen audit`."""
        record = receipt.record
        if record is None:
            raise TrustError(f"job {job_id} round {number}: the server signed no receipt")
        try:
            body = verify_record(record, self.trust.server_key(self.client), kind="accepted")
        except SignatureError as exc:
            raise TrustError(f"job {job_id} round {number}: receipt refused: {exc}") from exc
        if body["job_id"] != job_id or body["round"] != number:
            raise TrustError(f"job {job_id} round {number}: the receipt is for something else")
        self.trust.keep_receipt({"leaf_index": receipt.leaf_index, "record": record})

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


def _privacy(spec: JobCreate) -> dict[str, Any] | str | None:
    """The job's DP requirement as the privacy policy reads it (ε, δ, clip; "off"; None)."""
    if spec.privacy is None or isinstance(spec.privacy, str):
        return spec.privacy
    return spec.privacy.model_dump()
