"""The transparency log and identities: the server's key, signed tree heads, inclusion and
consistency proofs (RFC 9162), leaves, a job's signed records, and identity registration.

Heads, proofs and leaf hashes are public (anyone may audit the log); a leaf's payload only
to admins and the parties it concerns.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as FastPath

from dataspec.records import Identity, Inclusion, Leaf, Proof, ServerKey
from market.api.deps import BlobsDep, BuyerAccount, CurrentAccount, NowDep, SessionDep
from market.errors import NotFoundError
from market.services import access, trust
from market.translog import consistency, current, head, inclusion, log

router = APIRouter(tags=["log"])

Size = Annotated[int, Query(ge=0, le=2**40)]


@router.get("/v1/log/key", response_model=ServerKey)
def server_key() -> ServerKey:
    """The key every tree head and server receipt is signed with."""
    key = current()
    return ServerKey(public_key=key.public_hex, fingerprint=key.fingerprint)


@router.get("/v1/log/head")
def tree_head(session: SessionDep, now: NowDep) -> dict[str, Any]:
    """The signed head of the log (size, root, timestamp)."""
    return head(session, current(), now=now)


@router.get("/v1/log/consistency", response_model=Proof)
def consistency_proof(first: Size, second: Size, session: SessionDep) -> Proof:
    """RFC 9162 §2.1.4 proof that the tree of `first` leaves is a prefix of `second`."""
    return Proof(first=first, second=second, proof=consistency(session, first, second))


@router.get("/v1/log/inclusion", response_model=Inclusion)
def inclusion_proof(index: Size, size: Size, session: SessionDep) -> Inclusion:
    """RFC 9162 §2.1.3 audit path of leaf `index` in the tree of `size` leaves."""
    row = trust.leaf(session, index)
    return Inclusion(
        index=index, size=size, leaf_hash=row.leaf_hash, proof=inclusion(session, index, size)
    )


@router.get("/v1/log/leaves/{index}", response_model=Leaf)
def get_leaf(
    index: Annotated[int, FastPath(ge=0, le=2**40)], account: CurrentAccount, session: SessionDep
) -> Leaf:
    """One leaf with the exact bytes it hashes, to the parties it concerns."""
    row = trust.leaf(session, index)
    if not access.may_read_leaf(session, account, row):
        raise NotFoundError(f"no log leaf {index}")
    return Leaf(index=row.index, kind=row.kind, leaf_hash=row.leaf_hash, payload=row.payload)


@router.get("/v1/jobs/{job_id}/records")
def job_records(job_id: str, account: CurrentAccount, session: SessionDep) -> list[dict[str, Any]]:
    """The job's signed records (manifest, models, acceptances, closes, and the settlements
    and payouts the caller is party to) with leaf indices and inclusion proofs under the
    current tree."""
    access.visible_job(session, job_id, account)
    records = trust.records_of(session, job_id, account)
    size, proofs = log.inclusions(session, [r["index"] for r in records])
    for r in records:
        r["inclusion"] = {"size": size, "proof": proofs[r["index"]]}
    return records


@router.get("/v1/accounts/me/records")
def my_money_records(account: CurrentAccount, session: SessionDep) -> list[dict[str, Any]]:
    """The server-signed settlement records naming the caller as payee and its payout
    records, each with its inclusion proof under the current tree."""
    return trust.money_records_of(session, account)


@router.put("/v1/jobs/{job_id}/manifest")
def put_manifest(
    job_id: str, record: dict[str, Any], account: BuyerAccount, session: SessionDep,
    blobs: BlobsDep, now: NowDep,
) -> dict[str, Any]:  # fmt: skip
    """The buyer's signed manifest of its job (once; identical again is a no-op)."""
    job = access.owned_job(session, job_id, account)
    leaf = trust.put_manifest(session, blobs, job, record, now=now)
    return {"index": leaf.index, "kind": leaf.kind, "record": json.loads(leaf.payload)}


@router.post("/v1/jobs/{job_id}/records")
def post_record(
    job_id: str, record: dict[str, Any], account: BuyerAccount, session: SessionDep, now: NowDep
) -> dict[str, Any]:
    """The buyer's signature of a round's global model hash (a `model` record)."""
    job = access.owned_job(session, job_id, account)
    leaf = trust.put_model_record(session, job, record, now=now)
    return {"index": leaf.index, "kind": leaf.kind, "record": json.loads(leaf.payload)}


@router.put("/v1/accounts/me/identity", response_model=Identity)
def register_identity(
    record: dict[str, Any], account: CurrentAccount, session: SessionDep, now: NowDep
) -> Identity:
    """Register this account's Ed25519 key (a self-signed identity record); never replaced."""
    row = trust.register_identity(session, account, record, now=now)
    return Identity(
        account_id=row.account_id, public_key=row.public_key, fingerprint=row.fingerprint
    )


@router.get("/v1/accounts/{account_id}/identity", response_model=Identity)
def get_identity(account_id: str, account: CurrentAccount, session: SessionDep) -> Identity:
    row = trust.identity_of(session, account_id)
    if row is None:
        raise NotFoundError(f"account {account_id} has no identity key")
    return Identity(
        account_id=row.account_id, public_key=row.public_key, fingerprint=row.fingerprint
    )
