"""The dashboard's login session: a signed cookie, never the API key.

A cookie reads `<account id>.<expiry, unix seconds>.<signature>`, the signature being
HMAC-SHA256 under the dashboard secret over the account id, the expiry and the SHA-256 of the
account's API key as stored in the database. The key itself never reaches the cookie; binding
its hash means a session dies with the key it was opened with. A cookie that was altered,
has expired, or names an account that no longer exists is simply no session.

The secret is `POLLEN_UI_SESSION_SECRET` when set, otherwise 32 random bytes generated once
into `<data_dir>/ui-session.key` (mode 0600), so sessions survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from market.config import Settings
from market.models import Account

log = logging.getLogger(__name__)

COOKIE = "pollen_session"
SECRET_FILE = "ui-session.key"


def load_secret(settings: Settings) -> bytes:
    """The signing secret: from the settings, else from (or newly into) the data folder."""
    if settings.ui_session_secret:
        return settings.ui_session_secret.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    log.info("generated the dashboard session secret in %s", path)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    # Another worker may have created the file an instant ago and not written it yet.
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return text.encode()
        os.sched_yield()
    raise RuntimeError(f"the dashboard session secret in {path} is empty")


def _signature(secret: bytes, account_id: str, expires: int, key_hash: str) -> str:
    message = f"{account_id}\n{expires}\n{key_hash}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(account: Account, secret: bytes, *, now: datetime, ttl_s: int) -> str:
    """A cookie value for `account`, valid for `ttl_s` seconds from `now`."""
    expires = int((now + timedelta(seconds=ttl_s)).timestamp())
    return f"{account.id}.{expires}.{_signature(secret, account.id, expires, account.key_hash)}"


def resolve(session: Session, value: str | None, secret: bytes, *, now: datetime) -> Account | None:
    """The account a cookie value stands for, or None if it is missing, forged or expired."""
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    account_id, expires_text, signature = parts
    expires = int(expires_text)
    if datetime.fromtimestamp(expires, UTC) <= now:
        return None
    account = session.get(Account, account_id)
    if account is None:
        return None
    expected = _signature(secret, account_id, expires, account.key_hash)
    if not hmac.compare_digest(expected, signature):
        return None
    return account
