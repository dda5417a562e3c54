"""The server's Ed25519 signing key: `POLLEN_SIGNING_KEY` (64 hex digits), or a key generated
into the data directory (mode 0600) on first start and kept there.

`install` makes it the process's key (one server process signs with one key): the services
that sign receipts and round records deep inside a transaction take it from `current()`,
and the blob store the round-closed record reads its group sums from, from `blobs()`.
"""

from __future__ import annotations

from crypto.identity import IdentityKey
from market.blobs import BlobStore, store_for
from market.config import Settings

_current: IdentityKey | None = None
_blobs: BlobStore | None = None


def server_key(settings: Settings) -> IdentityKey:
    if settings.signing_key:
        return IdentityKey.from_seed_hex(settings.signing_key)
    return IdentityKey.load_or_create(settings.data_dir / "signing.key")


def install(settings: Settings, store: BlobStore | None = None) -> IdentityKey:
    global _current, _blobs
    _current = server_key(settings)
    _blobs = store if store is not None else store_for(settings)
    return _current


def blobs() -> BlobStore:
    if _blobs is None:
        raise RuntimeError("no blob store installed (create_app installs it)")
    return _blobs


def current() -> IdentityKey:
    if _current is None:
        raise RuntimeError("no server signing key installed (create_app installs it)")
    return _current
