"""The imprint attack a cheating buyer can mount with the weights it publishes each round.

Fowl, Geiping, Czaja, Goldblum and Goldstein, "Robbing the Fed: Directly Obtaining Private
Data in Federated Learning with Modified Models" (ICLR 2022). The buyer chooses the global
model, so it can plant a first layer whose ``k`` rows all share one direction ``a`` and whose
biases are the quantiles ``c_1 < … < c_k`` of ``a·x`` (it knows the data's distribution from
its own held-out set). Unit ``i`` fires for exactly the rows with ``a·x > c_i``, and with every
unit feeding the next layer through the same weights, every unit's gradient is one shared
scalar ``g(x)`` per row. Subtract neighbouring units and a bin holding one training row gives
``dW = g(x)·x`` and ``db = g(x)``: the row itself is ``dW / db``. One local epoch at full batch
makes a provider's update one gradient step, and the sum of several providers' updates is
still a sum over rows, so the decrypted aggregate leaks every row that sits alone in a bin.

This module is the attacker's side, used by ``tests/agents/test_imprint_attack.py`` and
``python -m bench privacy`` to measure what record-level DP (DP-SGD) takes away. It builds the
malicious weights, reconstructs rows from an aggregate, and scores the reconstruction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from agents.data import Dataset, DatasetSchema, prepare
from agents.modelio import flatten
from agents.models import MLPSpec, ModelSpec, build_model

if TYPE_CHECKING:
    from dataspec.views import JobPublic, RoundPublic

__all__ = [
    "ImprintModel",
    "attack_round",
    "craft_imprint",
    "reconstruct_rows",
    "recovered_share",
]

FloatArray = npt.NDArray[np.float64]
# A bin is used only if its bias gradient clearly stands out from decryption noise (the
# crypto layer floods every decryption with noise of σ ≈ 4e-7 per value): dividing by a
# near-zero bias gradient would turn that noise into garbage rows.
MIN_BIAS_GRADIENT = 1e-4


class ImprintModel:
    """The crafted global weights and what the attacker needs to read the update."""

    def __init__(
        self, spec: ModelSpec, weights: npt.NDArray[np.float32], n_features: int, bins: int
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.n_features = n_features
        self.bins = bins


def craft_imprint(
    reference: npt.ArrayLike, *, bins: int, n_classes: int, seed: int = 0
) -> ImprintModel:
    """Weights of an MLP ``[n_features → bins → n_classes]`` with an imprint first layer.

    ``reference`` holds rows from the same distribution as the providers' (prepared) data,
    such as the buyer's own held-out set; only their projection's mean and spread are used.
    """
    ref = np.asarray(reference, dtype=np.float64)
    n_features = ref.shape[1]
    rng = np.random.default_rng(seed)
    # A random direction rather than the paper's mean brightness: digits' pixels are integers,
    # so brightness ties between rows would put several rows in one bin.
    direction: npt.NDArray[np.float64] = rng.normal(size=(n_features,))
    direction /= np.linalg.norm(direction)
    proj = ref @ direction
    mu, sd = float(proj.mean()), float(proj.std())
    cuts = mu + sd * np.array([NormalDist().inv_cdf(k / (bins + 1)) for k in range(1, bins + 1)])
    # Scale the layer down so the logits stay small and the softmax never saturates (a
    # saturated, correctly classified row would have no gradient at all).
    scale = 1.0 / (bins * sd)
    spec = MLPSpec(arch="mlp", hidden=[bins])
    model = build_model(spec, n_features, n_classes, seed=seed)
    assert isinstance(model, torch.nn.Sequential)
    first, second = model[0], model[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
    out_dir = rng.normal(size=n_classes)
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(np.tile(direction * scale, (bins, 1))))
        first.bias.copy_(torch.from_numpy(-cuts * scale))
        second.weight.copy_(torch.from_numpy(np.tile(out_dir[:, None], (1, bins))))
        second.bias.zero_()
    return ImprintModel(spec, flatten(model), n_features, bins)


def reconstruct_rows(imprint: ImprintModel, update: npt.ArrayLike) -> FloatArray:
    """Candidate training rows read out of a (summed) update to ``imprint.weights``."""
    vec = np.asarray(update, dtype=np.float64)
    k, d = imprint.bins, imprint.n_features
    # The flat vector is in sorted key order: "0.bias", "0.weight", "2.bias", "2.weight".
    d_b = vec[:k]
    d_w = vec[k : k + k * d].reshape(k, d)
    # Unit i fires for a·x > c_i; unit i minus unit i+1 is the bin (c_i, c_{i+1}].
    bin_w = d_w - np.vstack([d_w[1:], np.zeros((1, d))])
    bin_b = d_b - np.append(d_b[1:], 0.0)
    usable = np.abs(bin_b) > MIN_BIAS_GRADIENT
    rows: FloatArray = bin_w[usable] / bin_b[usable, None]
    return rows


def recovered_share(rows: npt.ArrayLike, candidates: npt.ArrayLike, *, tol: float = 1e-3) -> float:
    """Fraction of ``rows`` that some candidate matches to within ``tol`` on every feature."""
    truth = np.asarray(rows, dtype=np.float64)
    cand = np.asarray(candidates, dtype=np.float64)
    if len(truth) == 0:
        raise ValueError("no rows to compare with")
    if len(cand) == 0:
        return 0.0
    hit = np.zeros(len(truth), dtype=bool)
    for start in range(0, len(cand), 256):
        block = cand[start : start + 256]
        err = np.abs(truth[:, None, :] - block[None, :, :]).max(axis=2)
        hit |= (err <= tol).any(axis=1)
    return float(hit.mean())


class _RoundServer:
    """Stands in for the marketplace in one attacked round: serves the buyer's crafted model
    and public context, and adds the envelopes into a real CKKS accumulator as the server does."""

    def __init__(self, model_bytes: bytes, context: bytes) -> None:
        self.model_bytes = model_bytes
        self.context = context

    def get_round_model(self, job_id: str, number: int) -> bytes:
        return self.model_bytes

    def get_context(self, job_id: str) -> bytes:
        return self.context

    def manifest(self, fingerprint: str) -> dict[str, Any]:
        """What the buyer's signed manifest says of this model and the context `fingerprint`."""
        return {
            "job_id": "imprint",
            "initial_model_sha256": hashlib.sha256(self.model_bytes).hexdigest(),
            "context_fingerprint": fingerprint,
        }


def attack_round(
    providers: Sequence[Dataset],
    schema: DatasetSchema,
    reference: npt.ArrayLike,
    *,
    bins: int,
    workdir: Path,
    agent_options: Mapping[str, Any] | None = None,
    job_privacy: Mapping[str, Any] | str | None = None,
    learning_rate: float = 10.0,
    seed: int = 0,
) -> float:
    """Share of all providers' rows the buyer reads out of one round's decrypted sum.

    Every provider runs the real agent (:class:`agents.provider.ProviderAgent`) on its raw
    data with ``agent_options`` (its privacy policy); the envelopes are validated and summed
    in a :class:`crypto.Accumulator` and the buyer decrypts the sum with its secret key.
    The job asks for one local epoch at full batch and the largest learning rate a job may
    set, which makes each update one large gradient step.
    """
    from agents.modelio import to_safetensors, unflatten_into
    from crypto import Accumulator, BuyerKeys, EnvelopeBinding, decrypt_aggregate, validate_envelope

    keys = BuyerKeys.generate()
    public = keys.public_context()
    local = [prepare(p, schema) for p in providers]
    imprint = craft_imprint(reference, bins=bins, n_classes=schema.n_classes, seed=seed)
    model = build_model(imprint.spec, schema.n_features, schema.n_classes, seed=0)
    unflatten_into(model, imprint.weights)
    server = _RoundServer(to_safetensors(model), public.to_bytes())
    param_count = int(imprint.weights.size)
    n = len(providers)
    job, rnd = _round_views(
        schema, imprint, public.preset.id, public.fingerprint, local,
        job_privacy=job_privacy, learning_rate=learning_rate, seed=seed,
    )  # fmt: skip
    manifest = server.manifest(public.fingerprint)
    acc = Accumulator.empty(public, job_id="imprint", round=1, param_count=param_count, summands=n)
    for i, raw in enumerate(providers):
        envelope = _agent_envelope(
            server, raw, i, job, rnd, manifest, workdir=workdir, agent_options=agent_options
        )
        binding = EnvelopeBinding("imprint", 1, f"p{i}", param_count, n)
        acc.add(validate_envelope(envelope, public, binding))
    total = decrypt_aggregate(keys, acc.to_bytes()).total
    candidates = reconstruct_rows(imprint, total)
    return recovered_share(np.concatenate([d.X for d in local]), candidates)


def _round_views(
    schema: DatasetSchema,
    imprint: ImprintModel,
    preset: str,
    fingerprint: str,
    local: Sequence[Dataset],
    *,
    job_privacy: Mapping[str, Any] | str | None,
    learning_rate: float,
    seed: int,
) -> tuple[JobPublic, RoundPublic]:
    """The job and round views an agent reads, as the server would serve them."""
    from dataspec.views import JobPublic, RoundPublic

    n = len(local)
    param_count = int(imprint.weights.size)
    now = datetime.now(UTC)
    spec = {
        "title": "imprint", "task": schema.task, "schema": schema.model_dump(),
        "model": imprint.spec.model_dump(), "rounds": 1, "local_epochs": 1,
        "learning_rate": learning_rate, "batch_size": max(len(d) for d in local),
        "seed": seed, "sample_cap": 10**9, "preset": preset,
        "privacy": job_privacy, "budget_cents": 1, "price_cap_cents": 0,
        "min_providers": max(n, 2), "max_providers": max(n, 2),
    }  # fmt: skip
    job = JobPublic.model_validate({
        "id": "imprint", "buyer_id": "harness", "title": "imprint", "state": "running",
        "spec": spec, "rounds_total": 1, "current_round": 1, "accepted_providers": [],
        "param_count": param_count, "fingerprint": fingerprint, "budget_cents": 1,
        "funded_cents": 1, "currency": "usd", "failure_reason": None,
        "has_final_model": False, "rounds": [], "created_at": now, "updated_at": now,
    })  # fmt: skip
    rnd = RoundPublic.model_validate({
        "job_id": "imprint", "round": 1, "state": "collecting", "attempt": 1,
        "deadline": now, "expected_count": n, "expected_providers": [], "submitted": 0,
        "included": [], "you_submitted": False, "weight_norm": sum(len(d) for d in local),
        "param_count": param_count, "quorum": 2, "summands": n, "metrics": None,
        "close_reason": None,
    })  # fmt: skip
    return job, rnd


def _agent_envelope(
    server: _RoundServer,
    raw: Dataset,
    i: int,
    job: JobPublic,
    rnd: RoundPublic,
    manifest: dict[str, Any],
    *,
    workdir: Path,
    agent_options: Mapping[str, Any] | None,
) -> bytes:
    """Provider `i`'s envelope of the round, made by the real agent on its raw data."""
    from agents.provider import ProviderAgent

    agent = ProviderAgent(
        server,  # type: ignore[arg-type]
        raw,
        state_dir=workdir / f"provider-{i}",
        listing_name=f"provider-{i}",
        ask_cents=1,
        seed=i,
        notify=lambda msg: None,
        **dict(agent_options or {}),
    )
    agent._active_jobs()["imprint"] = {"offer_id": "o", "submitted": {}, "done": False}
    # The harness is the buyer: its manifest is the verified one (model and context
    # are still checked against it before training).
    agent.sealer.manifests["imprint"] = manifest
    return agent._build_envelope(job, rnd, f"p{i}")
