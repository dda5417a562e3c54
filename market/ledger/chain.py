"""The journal's hash chain, and `verify`: recompute it and the balances from the rows.

`canonical` is the byte string hashed for one transaction: sorted-key, compact JSON of its
fields and its postings in order. Anyone holding a copy of the two tables can recompute the
chain with `hashlib` and `json` alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from market.ledger.names import MAY_GO_NEGATIVE, kind_of
from market.models.ledger import (
    BrokenLink,
    LedgerPosting,
    LedgerReport,
    LedgerTransaction,
)

GENESIS = "0" * 64


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    *,
    seq: int,
    txn_id: str,
    key: str,
    kind: str,
    job_id: str | None,
    currency: str,
    memo: str,
    meta: dict[str, Any],
    created_at: datetime,
    postings: Sequence[tuple[str, int]],
) -> str:
    doc = {
        "seq": seq,
        "id": txn_id,
        "key": key,
        "kind": kind,
        "job_id": job_id,
        "currency": currency,
        "memo": memo,
        "meta": meta,
        "created_at": _iso(created_at),
        "postings": [[account, amount] for account, amount in postings],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(prev_hash: str, canonical_json: str) -> str:
    return hashlib.sha256((prev_hash + canonical_json).encode()).hexdigest()


def txn_canonical(txn: LedgerTransaction, postings: Sequence[LedgerPosting]) -> str:
    return canonical(
        seq=txn.seq,
        txn_id=txn.id,
        key=txn.key,
        kind=txn.kind,
        job_id=txn.job_id,
        currency=txn.currency,
        memo=txn.memo,
        meta=txn.meta,
        created_at=txn.created_at,
        postings=[(p.account, p.amount) for p in sorted(postings, key=lambda p: p.position)],
    )


def _check(
    txn: LedgerTransaction, postings: Sequence[LedgerPosting], prev: str, expected_seq: int
) -> str | None:
    if txn.seq != expected_seq:
        return f"sequence gap: expected {expected_seq}, found {txn.seq}"
    if txn.prev_hash != prev:
        return "prev_hash does not match the previous transaction's hash"
    if len(postings) < 2:
        return f"{len(postings)} posting(s), at least 2 needed"
    if any(p.amount == 0 for p in postings):
        return "a posting of zero"
    if sum(p.amount for p in postings) != 0:
        return f"postings sum to {sum(p.amount for p in postings)}, not 0"
    if chain_hash(prev, txn_canonical(txn, postings)) != txn.hash:
        return "hash does not match the transaction's content"
    return None


def verify(session: Session) -> LedgerReport:
    """Walk the chain from the genesis; report the first broken link and the balances."""
    txns = session.exec(select(LedgerTransaction).order_by(col(LedgerTransaction.seq))).all()
    legs: dict[str, list[LedgerPosting]] = defaultdict(list)
    for p in session.exec(select(LedgerPosting)).all():
        legs[p.txn_id].append(p)
    prev, broken = GENESIS, None
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for n, txn in enumerate(txns, start=1):
        reason = _check(txn, legs.get(txn.id, []), prev, n)
        if reason is not None and broken is None:
            broken = BrokenLink(seq=txn.seq, txn_id=txn.id, reason=reason)
        prev = txn.hash
        for p in legs.get(txn.id, []):
            sums[(txn.currency, p.account)] += p.amount
    known = {t.id for t in txns}
    orphans = sorted(tid for tid in legs if tid not in known)
    if orphans and broken is None:
        broken = BrokenLink(seq=0, txn_id=orphans[0], reason="postings without a transaction")
    totals: dict[str, dict[str, int]] = {}
    negative = []
    for (currency, account), amount in sorted(sums.items()):
        kind = kind_of(account)
        if amount < 0 and kind not in MAY_GO_NEGATIVE:
            negative.append(account)
        t = totals.setdefault(currency, dict.fromkeys(_TOTAL_KEYS, 0))
        t[_BUCKET[kind]] += -amount if kind == "clearing" else amount
    for t in totals.values():
        t["paid"] = t["payable"] + t["transferred"]
        t["balanced"] = int(t["funded"] == t["paid"] + t["fees"] + t["refunded"] + t["escrow"])
    return LedgerReport(
        ok=broken is None and not negative and all(t["balanced"] for t in totals.values()),
        transactions=len(txns),
        head_hash=prev,
        broken=broken,
        totals=totals,
        negative_accounts=negative,
    )


_BUCKET = {
    "clearing": "funded",
    "escrow": "escrow",
    "payable": "payable",
    "paid": "transferred",
    "fees": "fees",
    "refunds": "refunded",
}
_TOTAL_KEYS = ("funded", "escrow", "payable", "transferred", "fees", "refunded")
