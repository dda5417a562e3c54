"""Appending leaves and reading the tree back: heads, inclusion and consistency proofs.

Appends share the journal's serialization (`market.ledger.journal`'s process lock and its
database lock held to commit), so leaf indices are gap-free and a ledger transaction and its
leaf commit together or not at all.

Heads and proofs come from an in-memory tree of the committed leaves (`market.translog.tree`),
one per database, extended on each request by the leaves committed since (read on a
connection of its own, so a leaf of an open transaction never enters it): O(1) queries and
O(log² n) hashes instead of reading and rehashing all n leaves. A restarted server rebuilds
it from the stored leaf hashes.
"""

from __future__ import annotations

import json
import threading
import weakref
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from crypto.identity import IdentityKey, canonical
from crypto.merkle import leaf_hash
from market.errors import InvalidInputError
from market.ledger import journal
from market.models.translog import LogLeaf
from market.translog.tree import Levels


def _append_locked(
    session: Session,
    kind: str,
    doc: dict[str, Any],
    *,
    now: datetime,
    job_id: str | None = None,
    round: int | None = None,
    account_id: str | None = None,
) -> LogLeaf:
    payload = canonical(doc).decode()
    leaf = LogLeaf(
        # The next index, read by the INSERT itself (the caller holds the chain's lock): one
        # statement where a read and then a write were two round trips under that lock.
        index=_next_index(),
        leaf_hash=leaf_hash(payload.encode()).hex(),
        kind=kind,
        job_id=job_id,
        round=round,
        account_id=account_id,
        payload=payload,
        created_at=now,
    )
    session.add(leaf)
    session.flush()
    return leaf


def _next_index() -> Any:
    return select(func.coalesce(func.max(LogLeaf.index) + 1, 0)).scalar_subquery()


def append(
    session: Session,
    kind: str,
    doc: dict[str, Any],
    *,
    now: datetime,
    job_id: str | None = None,
    round: int | None = None,
    account_id: str | None = None,
) -> LogLeaf:
    """Append one leaf (flushed, not committed): a signed record, under the chain's lock."""
    with journal._append_lock:
        journal._lock_chain(session)
        return _append_locked(
            session, kind, doc, now=now, job_id=job_id, round=round, account_id=account_id
        )


def append_ledger(
    session: Session, txn_hash: str, body: str, *, job_id: str | None, now: datetime
) -> LogLeaf:
    """The leaf of one ledger transaction; called by `journal.post` under its lock."""
    doc = {"kind": "ledger", "hash": txn_hash, "txn": json.loads(body)}
    return _append_locked(session, "ledger", doc, now=now, job_id=job_id)


def leaf_hashes(session: Session, size: int | None = None) -> list[bytes]:
    stmt = select(LogLeaf.leaf_hash).order_by(col(LogLeaf.index))
    if size is not None:
        stmt = stmt.limit(size)
    return [bytes.fromhex(h) for h in session.exec(stmt).all()]


_trees: weakref.WeakKeyDictionary[Engine, Levels] = weakref.WeakKeyDictionary()
_trees_lock = threading.Lock()


def tree(session: Session) -> Levels:
    """The tree of every committed leaf of this session's database, brought up to date."""
    engine = session.get_bind().engine
    with _trees_lock:
        levels = _trees.setdefault(engine, Levels())
        stmt = (
            select(LogLeaf.index, LogLeaf.leaf_hash)
            .where(col(LogLeaf.index) >= levels.size)
            .order_by(col(LogLeaf.index))
        )
        with Session(engine) as fresh:
            for index, h in fresh.exec(stmt).all():
                if index != levels.size:
                    raise RuntimeError(f"log leaf {index} follows {levels.size - 1}: a gap")
                levels.append(bytes.fromhex(h))
        return levels


def forget(engine: Engine) -> None:
    """Drop the cached tree of `engine`'s database (as a restart does)."""
    with _trees_lock:
        _trees.pop(engine, None)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def head(session: Session, key: IdentityKey, *, now: datetime) -> dict[str, Any]:
    """The signed tree head of everything committed: a `tree-head` record."""
    levels = tree(session)
    size = levels.size
    body = {"size": size, "root": levels.root(size).hex(), "timestamp": _iso(now)}
    return key.record("tree-head", body)


def _sized(session: Session, *sizes: int) -> Levels:
    levels = tree(session)
    for s in sizes:
        if not 0 <= s <= levels.size:
            raise InvalidInputError(f"the log has {levels.size} leaves, not {s}")
    return levels


def inclusion(session: Session, index: int, size: int) -> list[str]:
    levels = _sized(session, size)
    if not 0 <= index < size:
        raise InvalidInputError(f"leaf {index} is not in a tree of {size}")
    return [h.hex() for h in levels.inclusion(index, size)]


def consistency(session: Session, first: int, second: int) -> list[str]:
    levels = _sized(session, first, second)
    if first > second:
        raise InvalidInputError(f"a tree of size {second} cannot extend one of {first}")
    return [h.hex() for h in levels.consistency(first, second)]


def inclusions(session: Session, indices: list[int]) -> tuple[int, dict[int, list[str]]]:
    """The current tree size and the audit path of each leaf in `indices` under it."""
    levels = tree(session)
    size = levels.size
    return size, {i: [h.hex() for h in levels.inclusion(i, size)] for i in indices}


def ledger_leaf(session: Session, txn_hash: str, job_id: str | None) -> LogLeaf:
    """The leaf of the ledger transaction with chain hash `txn_hash` (`journal.post`'s)."""
    stmt = select(LogLeaf).where(LogLeaf.kind == "ledger", LogLeaf.job_id == job_id)
    stmt = stmt.where(col(LogLeaf.payload).contains(f'"hash":"{txn_hash}"'))
    row = session.exec(stmt.order_by(col(LogLeaf.index).desc())).first()
    if row is None:
        raise LookupError(f"ledger transaction {txn_hash[:16]}… has no log leaf")
    return row


def leaves_of(
    session: Session,
    *,
    job_id: str | None = None,
    kind: str | None = None,
    account_id: str | None = None,
) -> list[LogLeaf]:
    stmt = select(LogLeaf).order_by(col(LogLeaf.index))
    if job_id is not None:
        stmt = stmt.where(LogLeaf.job_id == job_id)
    if kind is not None:
        stmt = stmt.where(LogLeaf.kind == kind)
    if account_id is not None:
        stmt = stmt.where(LogLeaf.account_id == account_id)
    return list(session.exec(stmt).all())
