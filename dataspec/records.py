"""What the server answers about identities and its transparency log (RFC 9162): its
signing key, signed tree heads, consistency and inclusion proofs, leaves, registered
identity keys, and the signed records logged about a job or an account.

A signed record travels as the exact JSON its signature and its leaf hash cover, so a
logged record's `record` stays a plain object: parsing it into fields and writing it back
could change the bytes a client hashes. Defined once for both sides (see
:mod:`dataspec.views`).
"""

from __future__ import annotations

from typing import Any

from dataspec.views import View

__all__ = [
    "Identity",
    "Inclusion",
    "InclusionPath",
    "Leaf",
    "LoggedRecord",
    "Proof",
    "ServerKey",
    "SignedRecord",
]

# `ServerKey` … `Identity` are the server's response models: a docstring would become their
# description in its OpenAPI document, so they carry none.


class ServerKey(View):
    public_key: str
    fingerprint: str


class Proof(View):
    first: int
    second: int
    proof: list[str]


class Inclusion(View):
    index: int
    size: int
    leaf_hash: str
    proof: list[str]


class Leaf(View):
    index: int
    kind: str
    leaf_hash: str
    payload: str


class Identity(View):
    account_id: str
    public_key: str
    fingerprint: str


class SignedRecord(View):
    """A record signed by one key (the server's signed tree head is one): `sig` covers
    `kind` and `body` as canonical JSON, `signer` is the key's fingerprint."""

    kind: str
    body: dict[str, Any]
    signer: str
    sig: str


class InclusionPath(View):
    """A leaf's audit path under the tree of `size` leaves current when it was served."""

    size: int
    proof: list[str]


class LoggedRecord(View):
    """A signed record in the log: its leaf index, its kind, the record as signed, and (in
    the lists of a job's or an account's records) its inclusion proof."""

    index: int
    kind: str
    record: dict[str, Any]
    inclusion: InclusionPath | None = None
