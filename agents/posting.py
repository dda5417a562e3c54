"""Posting a job as a buyer: the public context, the round-1 model and the signed manifest.

`post_job` creates the job, uploads the buyer's public context (never its secret key) and
the initial model built from the job's seed, signs the job's manifest with the buyer's
identity key when it has one, and asks to fund it. Agents that verify work only for jobs
whose signed manifest matches what the server serves them, and every round's model is
signed the same way (`model_record`). Driving the job afterwards is agents.buyer.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from agents.client import PollenClient
from agents.modelio import to_safetensors
from agents.models import build_model
from agents.trust import manifest_body, register_identity
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from dataspec.jobs import JobCreate
from dataspec.views import JobFunding

logger = logging.getLogger(__name__)


def initial_model_bytes(spec: JobCreate) -> bytes:
    """The job's round-1 global model, built from the registry with the job's seed."""
    schema = spec.dataset_schema
    model = build_model(spec.model, schema.n_features, schema.n_classes, seed=spec.seed)
    return to_safetensors(model)


def post_job(
    client: PollenClient,
    keys: BuyerKeys,
    spec: dict[str, Any],
    *,
    identity: IdentityKey | None = None,
) -> JobFunding:
    """Create the job, upload the public context and the initial model, ask to fund it.

    With an `identity`, the buyer signs the job's manifest (context fingerprint, model size
    and initial model hash, quorum, prices, deadlines) before funding: agents work only for
    jobs whose signed manifest matches what the server serves them."""
    job = client.create_job(spec)
    context = keys.public_context()
    client.put_context(job.id, context.to_bytes())
    model = initial_model_bytes(job.spec)
    client.put_model(job.id, model)
    if identity is None:
        logger.warning(
            "job %s is posted without a signed manifest: agents that verify will refuse it "
            "(pass identity=buyer_identity(out_dir))",
            job.id,
        )
    else:
        ensure_registered(client, identity)
        job = client.get_job(job.id)
        body = manifest_body(job, context.fingerprint, model)
        client.put_manifest(job.id, identity.record("manifest", body))
        client.post_record(job.id, model_record(identity, job.id, 1, model))
    return client.fund_job(job.id)


def buyer_identity(out_dir: Path) -> IdentityKey:
    """The buyer's identity key kept in its output directory (made on first use, 0600):
    the key `BuyerRun` signs with when given none, so `post_job` can sign with it too."""
    return IdentityKey.load_or_create(out_dir / "identity.key")


def ensure_registered(client: PollenClient, identity: IdentityKey) -> None:
    """Register the identity key with the account (a no-op when already registered)."""
    register_identity(client, identity, client.me().id)


def model_record(identity: IdentityKey, job_id: str, number: int, model: bytes) -> dict[str, Any]:
    body = {"job_id": job_id, "round": number, "model_sha256": hashlib.sha256(model).hexdigest()}
    return identity.record("model", body)
