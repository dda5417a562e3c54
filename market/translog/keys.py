"""The server's Ed25519 signing key: `POLLEN_SIGNING_KEY` (64 hex digits), or a key generated
into the data directory (mode 0600) on first start and kept there.

`install` makes it the process's key (one server process signs with one key): the services
that sign receipts and round records deep inside a transaction take it from `current()`.
"""

from __future__ import annotations

from crypto.identity import IdentityKey
from market.config import Settings

_current: IdentityKey | None = None


def server_key(settings: Settings) -> IdentityKey:
    if settings.signing_key:
        return IdentityKey.from_seed_hex(settings.signing_key)
    return IdentityKey.load_or_create(settings.data_dir / "signing.key")


def install(settings: Settings) -> IdentityKey:
    global _current
    _current = server_key(settings)
    return _current


def current() -> IdentityKey:
    if _current is None:
        raise RuntimeError("no server signing key installed (create_app installs it)")
    return _current
