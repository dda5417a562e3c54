"""Accounts and API keys.

A key is `secrets.token_urlsafe(32)` prefixed with `pk_`, returned once at creation and stored
only as its SHA-256: a database leak does not leak credentials, and lookup stays an index hit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from market.db import unit_of_work
from market.errors import AuthenticationError, InvalidInputError
from market.models import Account, AccountCreated, AccountPublic
from market.models.types import new_id

log = logging.getLogger(__name__)

_PREFIX = {"buyer": "byr", "provider": "prv", "admin": "adm"}


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "pk_" + secrets.token_urlsafe(32)


def public(account: Account) -> AccountPublic:
    return AccountPublic.model_validate(account, from_attributes=True)


def create_account(
    session: Session, *, role: str, name: str, api_key: str | None = None
) -> AccountCreated:
    """Create an account and return it with its API key (the only time the key is shown)."""
    if role not in _PREFIX:
        raise InvalidInputError(f"unknown role {role!r}")
    key = api_key or new_api_key()
    account = Account(id=new_id(_PREFIX[role]), role=role, name=name, key_hash=hash_key(key))
    with unit_of_work(session):
        session.add(account)
    session.refresh(account)
    log.info("created %s account %s", role, account.id)
    return AccountCreated(**public(account).model_dump(), api_key=key)


def authenticate(session: Session, api_key: str) -> Account:
    account = _holder(session, api_key)
    if account is None:
        raise AuthenticationError("unknown API key")
    return account


def ensure_admin(session: Session, api_key: str, name: str = "operator") -> Account:
    """Make sure an admin account holds `api_key` (idempotent, used at startup).

    Server processes starting together on one database each run this: the one whose insert
    loses the race on the unique key takes the winner's account.
    """
    existing = _holder(session, api_key)
    if existing is None:
        try:
            created = create_account(session, role="admin", name=name, api_key=api_key)
        except IntegrityError:
            existing = _holder(session, api_key)  # another process inserted it first
            if existing is None:
                raise
        else:
            existing = session.get(Account, created.id)
            assert existing is not None
    if existing.role != "admin":
        raise InvalidInputError("the configured admin key belongs to a non-admin account")
    return existing


def _holder(session: Session, api_key: str) -> Account | None:
    return session.exec(select(Account).where(Account.key_hash == hash_key(api_key))).first()
