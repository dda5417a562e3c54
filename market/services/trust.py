"""Identity keys and the signed records the transparency log holds.

- an account registers its Ed25519 identity key once (a self-signed `identity` record, so
  the server holds proof of possession); a different key later is refused;
- the buyer's signed `manifest` binds the job to its context fingerprint, model size, initial
  model hash, quorum, prices and deadlines; its `model` records sign each round's global model;
- the server signs what it promises: `accepted` (a submission is inside the round's sum),
  `round-closed` (exactly which providers the aggregate holds, the aggregate's hash, and each
  released group's members and sum hash), `settlement` (where a round's money went: each
  payee's cents, the fees, any refund, and the ledger transactions' leaves) and `payout`
  (what left the platform for one provider, on which rail, under which reference).

Every record is a log leaf, appended in the same database transaction as the state it
describes; the caller commits (`register_identity`, `put_manifest` and `put_model_record`
are entry points and commit their own).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from crypto.identity import IdentityKey, SignatureError, fingerprint, verify_record
from market.blobs import BlobStore
from market.db import unit_of_work
from market.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError
from market.lifecycle import JobState
from market.models import Account, Job, LedgerTransaction, Payout, Round
from market.models.translog import IdentityKey as IdentityRow
from market.models.translog import LogLeaf
from market.services import access
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
    with unit_of_work(session):
        session.add(row)
        log.append(session, "identity", record, now=now, account_id=account.id)
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
    if job.state not in (JobState.DRAFT, JobState.FUNDING):
        raise InvalidStateError(f"job is {job.state}: too late to sign its manifest")
    with unit_of_work(session):
        leaf = log.append(
            session, "manifest", record, now=now, job_id=job.id, account_id=job.buyer_id
        )
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
    with unit_of_work(session):
        leaf = log.append(
            session, "model", record, now=now, job_id=job.id, round=number, account_id=job.buyer_id
        )
    return leaf


def records_of(
    session: Session, job_id: str, viewer: Account | None = None
) -> list[dict[str, Any]]:
    """Every logged record about a job (not its ledger transactions), with leaf indices.

    Money records are shown only to whom they concern (`viewer`; None: everything): a
    settlement to the job's buyer and the payees it names, a payout to its provider."""
    out = []
    for leaf in log.leaves_of(session, job_id=job_id):
        if leaf.kind == "ledger":
            continue
        if viewer is not None and not access.concerns_money_record(session, viewer, leaf):
            continue
        out.append({"index": leaf.index, "kind": leaf.kind, "record": json.loads(leaf.payload)})
    return out


def money_records_of(session: Session, account: Account) -> list[dict[str, Any]]:
    """The settlement records naming `account` as payee and its payout records, each with
    its RFC 9162 inclusion proof under the current tree (size given)."""
    settlements = log.leaves_of(session, kind="settlement")
    rows = [leaf for leaf in settlements if account.id in access.payee_ids(leaf)]
    rows += log.leaves_of(session, kind="payout", account_id=account.id)
    rows.sort(key=lambda r: r.index)
    size, proofs = log.inclusions(session, [r.index for r in rows])
    return [
        {
            "index": r.index,
            "kind": r.kind,
            "record": json.loads(r.payload),
            "inclusion": {"size": size, "proof": proofs[r.index]},
        }
        for r in rows
    ]


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
    """Whether the buyer logged a signed manifest (asked on every upload: one index read, not
    the manifest itself)."""
    found = select(LogLeaf.index).where(LogLeaf.job_id == job_id, LogLeaf.kind == "manifest")
    return session.exec(found.limit(1)).first() is not None


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
    group_sums: list[dict[str, Any]] | None = None,
) -> LogLeaf:
    body = {
        "job_id": job.id,
        "round": rnd.number,
        "attempt": rnd.attempt,
        "included": sorted(rnd.acc_providers),
        "count": rnd.acc_count,
        "aggregate_sha256": aggregate_sha256,
    }
    body["groups"] = (
        group_sums if group_sums is not None else released_group_sums(session, job, rnd)
    )
    record = key.record("round-closed", body)
    return log.append(session, "round-closed", record, now=now, job_id=job.id, round=rnd.number)


def released_group_sums(session: Session, job: Job, rnd: Round) -> list[dict[str, Any]]:
    """Each group sum the buyer may decrypt: its index, the providers inside it and the
    sha256 of the exact bytes `GET …/groups/{index}/aggregate` serves."""
    from market.services import groups
    from market.services.submissions import job_context
    from market.translog import blobs

    parts = groups.released(session, rnd)
    if not parts:
        return []
    store = blobs()
    ctx = job_context(store, job)
    out = []
    for index, rows in sorted(parts.items()):
        members = sorted({p for g in rows for p in g.acc_providers})
        if len(rows) == 1 and rows[0].acc_sha256 is not None:
            # Served as stored: the hash taken as the server wrote it (the close checked the
            # blob against it), not of whatever the bucket holds now.
            out.append({"index": index, "members": members, "sum_sha256": rows[0].acc_sha256})
            continue
        digest = hashlib.sha256()
        for chunk in groups.open_group_aggregate(session, store, ctx, rnd, index):
            digest.update(chunk)
        out.append({"index": index, "members": members, "sum_sha256": digest.hexdigest()})
    return out


def _ledger_refs(session: Session, txns: list[LedgerTransaction]) -> list[dict[str, Any]]:
    refs = []
    for txn in txns:
        leaf = log.ledger_leaf(session, txn.hash, txn.job_id)
        refs.append({"txn_id": txn.id, "leaf_index": leaf.index})
    return refs


def log_settlement(
    session: Session,
    key: IdentityKey,
    job: Job,
    *,
    round: int | None,
    attempt: int | None,
    payees: dict[str, int],
    fees_cents: int,
    refund_cents: int,
    txns: list[LedgerTransaction],
    now: datetime,
) -> LogLeaf:
    """The server's signed account of money leaving a job's escrow: a round's shares and
    fee, a cancellation fee, or the refund of what was left (`round` None at the end)."""
    body = {
        "job_id": job.id,
        "buyer_id": job.buyer_id,
        "round": round,
        "attempt": attempt,
        "currency": job.currency,
        "payees": [{"provider_id": p, "cents": c} for p, c in sorted(payees.items()) if c > 0],
        "fees_cents": fees_cents,
        "refund_cents": refund_cents,
        "ledger": _ledger_refs(session, txns),
    }
    record = key.record("settlement", body)
    return log.append(
        session, "settlement", record, now=now, job_id=job.id, round=round, account_id=job.buyer_id
    )


def log_payout(
    session: Session,
    key: IdentityKey,
    payout: Payout,
    txn: LedgerTransaction,
    *,
    rail: str,
    now: datetime,
) -> LogLeaf:
    """The server's signed record that a provider was paid (rail and its reference)."""
    body = {
        "payout_id": payout.id,
        "provider_id": payout.provider_id,
        "cents": payout.amount_cents,
        "currency": payout.currency,
        "jobs": [payout.job_id],
        "batch_id": payout.batch_id,
        "rail": rail,
        "rail_reference": payout.external_id or payout.batch_id,
        "ledger": _ledger_refs(session, [txn]),
    }
    record = key.record("payout", body)
    return log.append(
        session, "payout", record, now=now, job_id=payout.job_id, account_id=payout.provider_id
    )


def leaf(session: Session, index: int) -> LogLeaf:
    row = session.get(LogLeaf, index)
    if row is None:
        raise NotFoundError(f"no log leaf {index}")
    return row


def identities(session: Session) -> list[IdentityRow]:
    return list(session.exec(select(IdentityRow)).all())
