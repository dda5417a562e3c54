"""Tables of the transparency log: its leaves, and the identity keys accounts registered.

A leaf is stored with the exact bytes it hashes (`payload`, canonical JSON), so anyone with
a copy can recompute every leaf hash and the tree (RFC 9162). Leaves are appended in the same
database transaction as the ledger transaction or signed record they log, and never change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from market.models.types import UTCDateTime, utcnow


class LogLeaf(SQLModel, table=True):
    __tablename__ = "log_leaf"

    # 0-based position in the Merkle tree; unique and gap-free (appends are serialized).
    index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    leaf_hash: str = Field(max_length=64)
    # `ledger` or a signed record's kind (identity, manifest, model, accepted, round-closed).
    kind: str = Field(max_length=32, index=True)
    job_id: str | None = Field(default=None, max_length=32, index=True)
    round: int | None = None
    # The account the leaf concerns (signer, submitter), for lookups and read access.
    account_id: str | None = Field(default=None, max_length=32, index=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class IdentityKey(SQLModel, table=True):
    """An account's Ed25519 identity key, registered once and never replaced."""

    __tablename__ = "identity_key"

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=32)
    public_key: str = Field(max_length=64)
    fingerprint: str = Field(max_length=64, unique=True)
    registered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
