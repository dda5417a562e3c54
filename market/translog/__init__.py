"""The transparency log: every ledger transaction and every signed record is a leaf of an
append-only RFC 9162 Merkle tree whose heads the server signs.

Clients keep the latest head they verified and ask for a consistency proof to every newer
one (certificate transparency, RFC 9162 §2.1.4), so history rewritten or forked behind the
API is caught by anyone who saw an earlier head. Hashing and proofs are in `crypto.merkle`,
signatures in `crypto.identity`; this package stores leaves and serves proofs.
"""

from market.translog.keys import blobs, current, install, server_key
from market.translog.log import (
    append,
    append_ledger,
    consistency,
    head,
    inclusion,
    leaf_hashes,
    leaves_of,
)

__all__ = [
    "append",
    "append_ledger",
    "blobs",
    "consistency",
    "current",
    "head",
    "inclusion",
    "install",
    "leaf_hashes",
    "leaves_of",
    "server_key",
]
