"""Sealing a round's update: a provider's local training turned into the envelope it sends.

Everything between the server's round and the encrypted bytes lives here:

- the buyer's inputs, used only once they match the buyer's signed manifest: the round's
  model, and the job's public context (checked once, then kept in the state directory);
- the job's DP-SGD plan (record-level DP at the ε the provider's `PrivacyPolicy` allows, see
  agents.privacy), made once on the job's first round and kept in the agent's state file;
- the ε a round costs, charged in that file *before* the update can leave, so a crash
  re-trains and pays again rather than release a round it did not pay for; one more round
  that would pass the job's ε raises `BudgetSpentError` instead of training;
- optional update-level DP (the whole update clipped and noised);
- the update's weight, and its encryption under the buyer's context with the encryptions
  of zero made while the agent waited (`ZeroPools`, crypto.zeropool);
- the signature of the envelope's header, and reporting the ε spent once the update is in.

Which round to work, writing the envelope to disk before it is sent, the upload and the
server's receipt stay with the agent (agents.provider).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from agents.client import ApiError, PollenClient
from agents.data import Dataset, prepare
from agents.modelio import flatten, load_safetensors
from agents.models import build_model
from agents.privacy import DPPlan, PrivacyPolicy, epsilon_spent, plan_record_dp, privatize
from agents.progress import AgentProgress
from agents.state import StateFile, write_atomic
from agents.tabular import Table
from agents.training import (
    EpochInfo,
    FloatVector,
    RecordDP,
    TrainResult,
    compute_update,
    train_local,
)
from agents.trust import Trust, TrustError
from crypto import EnvelopeBinding, PublicContext, read_header, update_weight
from crypto.envelope import write_update
from crypto.identity import IdentityKey
from crypto.zeropool import ZeroPool
from dataspec.jobs import JobCreate
from dataspec.views import JobPublic, RoundPublic

if TYPE_CHECKING:
    from torch import nn

    from agents.privacy import DPConfig

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


# An envelope's header is at most a few hundred bytes plus three 256-byte identifiers.
_MAX_HEADER = 4096


class BudgetSpentError(Exception):
    """One more round would take a job past the ε this provider agreed to."""


def train_seed(job_seed: int, round_number: int, agent_seed: int) -> int:
    """The seed of one local training run; the plaintext baseline uses the same formula."""
    return job_seed * 1_000_003 + (round_number - 1) * 1009 + agent_seed


def header_signature(path: Path, identity: IdentityKey) -> str:
    """`identity`'s signature of the hash of the header of the envelope at `path`."""
    with path.open("rb") as f:
        head = f.read(_MAX_HEADER)
    header = head[: read_header(head).header_len]
    return identity.sign("envelope", {"header_sha256": hashlib.sha256(header).hexdigest()})


def job_privacy(spec: JobCreate) -> dict[str, Any] | str | None:
    """The job's DP requirement as the privacy policy reads it (ε, δ, clip; "off"; None)."""
    if spec.privacy is None or isinstance(spec.privacy, str):
        return spec.privacy
    return spec.privacy.model_dump()


class ZeroPools:
    """Per job: encryptions of zero for its next round, made while the agent waits by a
    child process at the lowest CPU priority (in memory only, each used once:
    crypto.zeropool)."""

    def __init__(self) -> None:
        self._pools: dict[str, ZeroPool] = {}

    def for_job(self, job: JobPublic, ctx: PublicContext | None) -> ZeroPool | None:
        """The job's pool (None for a plaintext job or before its context is here)."""
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

    def prefill(self, job: JobPublic, ctx: PublicContext | None) -> None:
        """Make the next round's encryptions of zero in the background while waiting."""
        pool = self.for_job(job, ctx)
        if pool is not None:
            pool.start_filling()

    def drop(self, job_id: str) -> None:
        """The job ended: its pool's child process goes with it."""
        pool = self._pools.pop(job_id, None)
        if pool is not None:
            pool.close()


def report_privacy(client: PollenClient, job_id: str, number: int, entry: dict[str, Any]) -> None:
    """Tell the server (and so the buyer) the ε spent so far; only ε and δ travel."""
    if "epsilon" not in entry:
        return
    try:
        client.report_privacy(job_id, number, float(entry["epsilon"]), float(entry["dp_delta"]))
    except ApiError as exc:
        # The update is in; a refused report must not stop the agent (it retries with the
        # next round's figure, which covers this one).
        logger.warning("privacy report for job %s round %d refused: %s", job_id, number, exc)


class Sealer:
    """Makes a provider's envelopes: the buyer's inputs checked, the data trained on them,
    the update encrypted.

    The round's model and the job's context are used only once they match the buyer's
    signed manifest (`trust`, with the buyer's key pinned or given as `trust_buyer`); the
    context is kept in `state_dir`. The job's entry in the agent's state file (`state`,
    section "jobs") carries its DP plan and the ε spent; `notify` and `progress` say what
    happens as it happens."""

    def __init__(
        self,
        *,
        client: PollenClient,
        trust: Trust,
        trust_buyer: str | None,
        state_dir: Path,
        state: StateFile,
        privacy: PrivacyPolicy,
        dp: DPConfig | None,
        seed: int,
        notify: Notify,
        on_epoch: Callable[[EpochInfo], None] | None,
        progress: AgentProgress,
    ) -> None:
        self.client = client
        self.trust = trust
        self.trust_buyer = trust_buyer
        self.state_dir = state_dir
        self.state = state
        self.privacy = privacy
        self.dp = dp
        self.seed = seed
        self.notify = notify
        self.on_epoch = on_epoch
        self.progress = progress
        self.manifests: dict[str, dict[str, Any]] = {}
        self.contexts: dict[str, PublicContext] = {}
        self.pools = ZeroPools()

    # ------------------------------------------------------------------ the buyer's inputs

    def manifest(self, job: JobPublic) -> dict[str, Any]:
        """The job's signed manifest, verified against the pinned buyer key."""
        if job.id not in self.manifests:
            self.manifests[job.id] = self.trust.manifest(self.client, job, self.trust_buyer)
        return self.manifests[job.id]

    def context(self, job_id: str) -> PublicContext:
        """The job's public context, checked against its manifest once and kept on disk."""
        if job_id not in self.contexts:
            path = self.state_dir / "contexts" / f"{job_id}.ctx"
            if not path.exists():
                served = self.client.get_context(job_id)
                manifest = self.manifests.get(job_id)
                if manifest is None:
                    raise TrustError(f"job {job_id}: no verified manifest for its context")
                self.trust.check_context(manifest, served)
                write_atomic(path, served)
            self.contexts[job_id] = PublicContext.from_bytes(path.read_bytes())
        return self.contexts[job_id]

    def round_model(self, job: JobPublic, number: int) -> nn.Module:
        """The round's global model, checked against the buyer's signed manifest (and the
        job's context checked too, before any training: a refusal costs nothing)."""
        schema = job.spec.dataset_schema
        model = build_model(job.spec.model, schema.n_features, schema.n_classes, seed=0)
        served = self.client.get_round_model(job.id, number)
        manifest = self.manifest(job)
        self.trust.check_model(self.client, manifest, number, served)
        self.context(job.id)
        load_safetensors(model, served)
        return model

    def prefill(self, job: JobPublic) -> None:
        """Make the job's next encryptions of zero in the background while the agent waits."""
        self.pools.prefill(job, self.contexts.get(job.id))

    # ------------------------------------------------------------------ the envelope

    def write(
        self,
        job: JobPublic,
        rnd: RoundPublic,
        me: str,
        out: BinaryIO,
        *,
        data: Dataset | Table,
        claimed: Callable[[int], int],
    ) -> dict[str, float]:
        """Train on the round's model and write the encrypted update to `out`, claiming
        `claimed(rows)` samples; returns the seconds spent per phase (train, encode,
        encrypt)."""
        local = prepare(data, job.spec.dataset_schema)
        model = self.round_model(job, rnd.round)
        global_vec = flatten(model)
        entry = self.state.section("jobs")[job.id]
        plan = self.dp_plan(entry, job.spec, len(local))
        record_dp = _record_dp(plan, entry)
        self.notify(_training_note(job, rnd.round, len(local), plan))
        self.progress.training(job.id, rnd.round, epochs=job.spec.local_epochs, samples=len(local))
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        result = self._train(job, rnd.round, model, local, record_dp)
        delta = compute_update(global_vec, flatten(model))
        timings["train"] = time.perf_counter() - tick
        if plan is not None:
            self._charge_record_dp(entry, plan, result.dp_steps)
        if self.dp is not None:
            delta = self._privatize(entry, delta, self.dp)
        samples = min(claimed(len(local)), job.spec.sample_cap)
        size = self._encrypt(job, rnd, me, out, delta, samples=samples, timings=timings)
        self.notify(
            f"job {job.id} round {rnd.round}: trained on {result.samples} samples, "
            f"loss {result.loss:.4f}, envelope {size / 1e6:.2f} MB"
        )
        return timings

    def dp_plan(self, entry: dict[str, Any], spec: JobCreate, samples: int) -> DPPlan | None:
        """The job's DP-SGD plan, made once on its first round and kept in the state file."""
        if "dp_plan" in entry:
            return DPPlan.from_dict(entry["dp_plan"]) if entry["dp_plan"] else None
        target = self.privacy.target_for(job_privacy(spec))
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

    def _train(
        self,
        job: JobPublic,
        number: int,
        model: nn.Module,
        local: Dataset,
        record_dp: RecordDP | None,
    ) -> TrainResult:
        """Train `model` in place on `local`, reporting every epoch."""
        spec = job.spec

        def on_epoch(info: EpochInfo) -> None:
            self.progress.epoch(job.id, number, info)
            if self.on_epoch is not None:
                self.on_epoch(info)

        return train_local(
            model,
            local,
            epochs=spec.local_epochs,
            lr=spec.learning_rate,
            batch_size=spec.batch_size,
            seed=train_seed(spec.seed, number, self.seed),
            progress=on_epoch,
            dp=record_dp,
        )

    def _charge_record_dp(self, entry: dict[str, Any], plan: DPPlan, steps: int) -> None:
        # Charged before the update can leave: a crash from here on re-trains and pays
        # again (safe), never releases a round it did not pay for.
        entry["dp_steps"] = int(entry.get("dp_steps", 0)) + steps
        entry["epsilon"] = plan.epsilon_after(entry["dp_steps"])
        entry["dp_delta"] = plan.delta
        self.state.save()

    def _privatize(self, entry: dict[str, Any], delta: FloatVector, dp: DPConfig) -> FloatVector:
        """Update-level DP: the whole update clipped and noised, its ε counted per round."""
        rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
        delta = privatize(delta, dp, rng)
        entry["dp_rounds"] = int(entry.get("dp_rounds", 0)) + 1
        entry["update_epsilon"] = epsilon_spent(dp, entry["dp_rounds"])
        self.state.save()
        return delta

    def _encrypt(
        self,
        job: JobPublic,
        rnd: RoundPublic,
        me: str,
        out: BinaryIO,
        delta: FloatVector,
        *,
        samples: int,
        timings: dict[str, float],
    ) -> int:
        """Write the weighted, encrypted update to `out`; its size in bytes."""
        number = rnd.round
        weight = update_weight(samples, rnd.weight_norm)
        if job.param_count is None:
            raise TrustError(f"job {job.id} round {number}: the server names no model size")
        binding = EnvelopeBinding(job.id, number, me, job.param_count, rnd.summands)
        self.progress.encrypting(job.id, number, params=len(delta))
        size = write_update(
            out,
            self.context(job.id).for_preset(job.spec.preset),
            delta,
            binding=binding,
            weight=weight,
            samples=samples,
            zeros=self.pools.for_job(job, self.contexts.get(job.id)),
            timings=timings,
        )
        self.progress.encrypted(job.id, number, size=size)
        return size


def _record_dp(plan: DPPlan | None, entry: dict[str, Any]) -> RecordDP | None:
    """The round's DP-SGD settings, or BudgetSpentError if the job's ε allows no more."""
    if plan is None:
        return None
    spent = int(entry.get("dp_steps", 0))
    if not plan.allows(spent):
        raise BudgetSpentError(
            f"one more round would take ε from {plan.epsilon_after(spent):.3f} past "
            f"{plan.epsilon:g}"
        )
    return RecordDP(plan.noise_multiplier, plan.clip)  # noise from os.urandom


def _training_note(job: JobPublic, number: int, samples: int, plan: DPPlan | None) -> str:
    dp = (
        f", DP-SGD σ={plan.noise_multiplier:.3f} toward ε={plan.epsilon:g})" if plan else ", no DP)"
    )
    return (
        f"job {job.id} round {number}: training on {samples} samples "
        f"({job.spec.local_epochs} epochs" + dp
    )
