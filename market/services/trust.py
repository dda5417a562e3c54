"""Identity keys and the signed records the transparency log holds.

- an account registers its Ed25519 identity key once (a self-signed `identity` record, so
  the server holds proof of possession); a different key later is refused;
- the buyer's signed `manifest` binds the job to its context fingerprint, model size, initial
  model hash, quorum, prices and deadlines; its `model` records sign each round's global model;
- the server signs what it promises: `accepted` (a submission is inside the round's sum) and
  `round-closed` (exactly which providers the aggregate holds, and the aggregate's hash).

Every record is a log leaf, appended in the same database transaction as the state it
describes; the caller commits.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from crypto.identity import IdentityKey, SignatureError, fingerprint, verify_record
from market.blobs import BlobStore
from market.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError
from market.models import Account, Job, Round
from market.models.translog import IdentityKey as IdentityRow
from market.models.translog import LogLeaf
from market.translog import log

Record = dict[str, Any]


def identity_of(session: Session, account_id: str) -> IdentityRow | None:
    return session.get(IdentityRow, account_id)


def register_identity(
    session: Session, account: Account, record: Record, *, now: datetime
) -> IdentityRow:
    """Register the account's key from its self-signed `identity` record (once)."""
    body = record.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("public_key"), str):
        raise InvalidInputError("an identity record's body holds account_id and public_key")
    if body.get("account_id") != account.id:
        raise InvalidInputError("the identity record names another account")
    public = str(body["public_key"])
    try:
        verify_record(record, public, kind="identity")
    except (SignatureError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"identity record does not verify: {exc}") from exc
    existing = identity_of(session, account.id)
    if existing is not None:
        if existing.public_key != public:
            raise ConflictError(
                f"account {account.id} already has identity key {existing.fingerprint[:16]}…; "
                "an identity key is never replaced"
            )
        return existing
    row = IdentityRow(
        account_id=account.id, public_key=public, fingerprint=fingerprint(public),
        registered_at=now,
    )  # fmt: skip
    session.add(row)
    log.append(session, "identity", record, now=now, account_id=account.id)
    session.commit()
    return row


def _key_of(session: Session, account_id: str, what: str) -> str:
    row = identity_of(session, account_id)
    if row is None:
        raise InvalidInputError(f"{what} {account_id} has registered no identity key")
    return row.public_key


def _verified(session: Session, record: Record, signer_id: str, kind: str) -> dict[str, Any]:
    try:
        body = verify_record(record, _key_of(session, signer_id, "account"), kind=kind)
    except (SignatureError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"{kind} record refused: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInputError(f"a {kind} record's body is an object")
    return body


def _records(session: Session, job_id: str, kind: str) -> list[LogLeaf]:
    return log.leaves_of(session, job_id=job_id, kind=kind)


def manifest_of(session: Session, job_id: str) -> Record | None:
    leaves = _records(session, job_id, "manifest")
    return json.loads(leaves[0].payload) if leaves else None


def put_manifest(
    session: Session, blobs: BlobStore, job: Job, record: Record, *, now: datetime
) -> LogLeaf:
    """Log the buyer's signed manifest after checking it describes this very job."""
    body = _verified(session, record, job.buyer_id, "manifest")
    facts = {
        "job_id": job.id,
        "buyer_id": job.buyer_id,
        "context_fingerprint": job.fingerprint,
        "param_count": job.param_count,
        "preset": job.preset_id,
        "quorum": job.quorum,
    }
    for name, value in facts.items():
        if body.get(name) != value:
            raise InvalidInputError(f"the manifest's {name} does not match the job")
    if job.model_key is None:
        raise InvalidStateError("upload the initial model before signing the manifest")
    hasher = hashlib.sha256()
    for chunk in blobs.open_read(job.model_key):  # a model can be 256 MiB: never whole
        hasher.update(chunk)
    digest = hasher.hexdigest()
    if body.get("initial_model_sha256") != digest:
        raise InvalidInputError("the manifest's initial_model_sha256 is not the uploaded model")
    existing = _records(session, job.id, "manifest")
    if existing:
        if json.loads(existing[0].payload) != record:
            raise ConflictError("the job already has a different signed manifest")
        return existing[0]
    if job.state not in ("draft", "funding"):
        raise InvalidStateError(f"job is {job.state}: too late to sign its manifest")
    leaf = log.append(session, "manifest", record, now=now, job_id=job.id, account_id=job.buyer_id)
    session.commit()
    return leaf


def put_model_record(session: Session, job: Job, record: Record, *, now: datetime) -> LogLeaf:
    """Log the buyer's signature of one round's global model hash (once per round)."""
    body = _verified(session, record, job.buyer_id, "model")
    number = body.get("round")
    if body.get("job_id") != job.id or not isinstance(number, int) or number < 1:
        raise InvalidInputError("a model record names this job and a round ≥ 1")
    for leaf in _records(session, job.id, "model"):
        if leaf.round == number:
            if json.loads(leaf.payload) != record:
                raise ConflictError(f"round {number} already has a different signed model")
            return leaf
    leaf = log.append(
        session, "model", record, now=now, job_id=job.id, round=number, account_id=job.buyer_id
    )
    session.commit()
    return leaf


def records_of(session: Session, job_id: str) -> list[dict[str, Any]]:
    """Every logged record about a job (not its ledger transactions), with leaf indices."""
    out = []
    for leaf in log.leaves_of(session, job_id=job_id):
        if leaf.kind != "ledger":
            out.append({"index": leaf.index, "kind": leaf.kind, "record": json.loads(leaf.payload)})
    return out


def verify_envelope_signature(
    session: Session, provider: Account, header_sha256: str, sig: str | None, *, required: bool
) -> Record | None:
    """The provider's `envelope` record over the header hash, or a refusal (422)."""
    row = identity_of(session, provider.id)
    if sig is None:
        if required or row is not None:
            raise InvalidInputError("the envelope is not signed (Pollen-Signature header)")
        return None
    if row is None:
        raise InvalidInputError(f"provider {provider.id} has registered no identity key")
    record = {
        "kind": "envelope",
        "body": {"header_sha256": header_sha256},
        "signer": row.fingerprint,
        "sig": sig,
    }
    try:
        verify_record(record, row.public_key, kind="envelope")
    except (SignatureError, ValueError) as exc:
        raise InvalidInputError(f"envelope signature refused: {exc}") from exc
    return record


def job_is_signed(session: Session, job_id: str) -> bool:
    return bool(_records(session, job_id, "manifest"))


def log_accepted(
    session: Session,
    key: IdentityKey,
    *,
    job_id: str,
    round: int,
    attempt: int,
    provider_id: str,
    payload_sha256: str,
    envelope: Record | None,
    accepted_at: str,
    now: datetime,
) -> tuple[Record, LogLeaf]:
    body = {
        "job_id": job_id,
        "round": round,
        "attempt": attempt,
        "provider_id": provider_id,
        "payload_sha256": payload_sha256,
        "envelope": envelope,
        "accepted_at": accepted_at,
    }
    record = key.record("accepted", body)
    leaf = log.append(
        session, "accepted", record, now=now, job_id=job_id, round=round, account_id=provider_id
    )
    return record, leaf


def log_round_closed(
    session: Session,
    key: IdentityKey,
    job: Job,
    rnd: Round,
    aggregate_sha256: str | None,
    *,
    now: datetime,
) -> LogLeaf:
    body = {
        "job_id": job.id,
        "round": rnd.number,
        "attempt": rnd.attempt,
        "included": sorted(rnd.acc_providers),
        "count": rnd.acc_count,
        "aggregate_sha256": aggregate_sha256,
    }
    record = key.record("round-closed", body)
    return log.append(session, "round-closed", record, now=now, job_id=job.id, round=rnd.number)


def leaf(session: Session, index: int) -> LogLeaf:
    row = session.get(LogLeaf, index)
    if row is None:
        raise NotFoundError(f"no log leaf {index}")
    return row


def may_read(session: Session, account: Account, row: LogLeaf) -> bool:
    """Leaf payloads are shown to admins and to the parties they concern (hashes to all)."""
    if account.role == "admin" or row.account_id == account.id or account.id in row.payload:
        return True
    if row.job_id is None:
        return False
    job = session.get(Job, row.job_id)
    if job is None:
        return False
    from market.services import access

    return job.buyer_id == account.id or access.is_participant(session, job.id, account.id)


def identities(session: Session) -> list[IdentityRow]:
    return list(session.exec(select(IdentityRow)).all())
