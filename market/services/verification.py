"""Which providers are real parties: the verification that quorum rests on.

Registering a provider account costs nothing, so a quorum of accounts is no quorum: a buyer
that registers its own (sybil) provider makes a quorum of 2 with one real provider, and the
round's sum minus the sybil's known update is the real provider's update. A quorum means
something only when its members are parties someone vouched for, so:

- **Stripe rail** (with Connect): a provider is verified while its Connect account has
  `payouts_enabled`, which Stripe grants only after the account's identity checks (KYC) and
  a bank account. `verified_by = "stripe-connect"`. It is read when the provider asks
  (`POST /v1/accounts/me/connect`, onboarding and every later check) and when Stripe says it
  changed (the `account.updated` webhook); payouts disabled later withdraw it.
- **Manual rail** (and on any rail as the operator's decision): an operator approves a
  provider (`POST /v1/admin/providers/{id}/approve`, `pollen admin approve-provider`);
  `verified_by` is the operator's account id. `revoke` withdraws either kind, and a revoked
  provider stays unverified until an operator approves it again (a Connect refresh does not
  undo an operator's revocation).

The rule (`POLLEN_REQUIRE_VERIFIED_PROVIDERS`, on by default): an unverified provider is never
matched to a job (`market.matching`, reason "provider not verified"). Every offer, hence every
participant, every submitter, every member of a round's random groups and every update inside
a released sum, comes from a provider that was verified when it was offered the job; the
quorum of rounds, of groups and of aggregate release counts those parties and nothing else.
Excluding at matching, rather than matching everyone and not counting some, is the version
that is a guarantee by construction: no sum, group or close decision ever has to tell
verified updates from unverified ones, and an unverified account is never paid for updates
that could not count. Losing verification (an operator's revocation, Connect payouts
disabled) withdraws the provider's pending offers and keeps it out of every later match; an
offer it had already accepted stands until that job ends (its updates were made while it was
verified, and dropping it mid-round would only cost the other providers a deadline). The
setting applies to offers made while it is on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from market.db import unit_of_work
from market.errors import InvalidInputError, InvalidStateError, NotFoundError
from market.lifecycle import OfferState
from market.models import Account, ConnectedAccount, Offer
from market.models.types import could_be_id
from market.payments import PaymentRail

log = logging.getLogger(__name__)

STRIPE_CONNECT = "stripe-connect"
_REVOKED = "revoked:"

_required = True


def configure(*, required: bool) -> None:
    """Set from `Settings.require_verified_providers` when the app is created."""
    global _required
    _required = required


def required() -> bool:
    """Must a provider be verified to be matched (and so to count toward any quorum)?"""
    return _required


def is_verified(account: Account) -> bool:
    return account.role == "provider" and account.verified_at is not None


def describe(account: Account) -> str:
    """One line for people: whether the provider is verified, by whom, since when."""
    if account.verified_at is None:
        return "not verified: never matched to a job" + (" (revoked)" if revoked(account) else "")
    since = f"{account.verified_at:%Y-%m-%d %H:%M} UTC"
    if account.verified_by == STRIPE_CONNECT:
        return f"verified by its Stripe Connect account (payouts enabled) since {since}"
    return f"approved by an operator on {since}"


def verified_ids(session: Session, provider_ids: Iterable[str]) -> set[str]:
    ids = list(set(provider_ids))
    if not ids:
        return set()
    rows = session.exec(
        select(Account.id).where(
            col(Account.id).in_(ids),
            Account.role == "provider",
            col(Account.verified_at).is_not(None),
        )
    ).all()
    return set(rows)


def _provider(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id) if could_be_id(account_id) else None
    if account is None:
        raise NotFoundError(f"no account {account_id}")
    if account.role != "provider":
        raise InvalidInputError(
            f"account {account_id} is a {account.role}, not a provider: only providers are verified"
        )
    return account


def approve(session: Session, operator: Account, account_id: str, *, now: datetime) -> Account:
    """An operator vouches for a provider; idempotent. Its listings are matched at once."""
    from market.services.matching import run_matching

    account = _provider(session, account_id)
    if account.verified_at is not None:
        return account
    with unit_of_work(session):
        account.verified_at = now
        account.verified_by = operator.id
        session.add(account)
    log.info("provider %s approved by %s", account.id, operator.id)
    run_matching(session, now=now)
    return account


def revoke(session: Session, operator: Account, account_id: str, *, now: datetime) -> Account:
    """An operator withdraws a provider's verification (either kind); its pending offers go."""
    from market.services.matching import run_matching

    account = _provider(session, account_id)
    with unit_of_work(session):
        account.verified_at = None
        account.verified_by = _REVOKED + operator.id
        session.add(account)
        _withdraw_pending(session, account, now=now)
    log.info("provider %s verification revoked by %s", account.id, operator.id)
    run_matching(session, now=now)  # the withdrawn places go to verified providers
    return account


def _withdraw_pending(session: Session, account: Account, *, now: datetime) -> None:
    """An unverified provider must not accept an offer made while it was verified (the
    caller commits)."""
    for offer in session.exec(
        select(Offer).where(Offer.provider_id == account.id, Offer.state == OfferState.PENDING)
    ):
        offer.state = OfferState.WITHDRAWN
        offer.decided_at = now
        session.add(offer)


def revoked(account: Account) -> bool:
    return account.verified_at is None and (account.verified_by or "").startswith(_REVOKED)


def apply_connect_status(
    session: Session, account: Account, payouts_enabled: bool, *, now: datetime
) -> bool:
    """Stripe's word on the provider's Connect account; True when it became verified.
    The caller commits."""
    if revoked(account):
        return False
    if payouts_enabled and account.verified_at is None:
        account.verified_at = now
        account.verified_by = STRIPE_CONNECT
        session.add(account)
        log.info("provider %s verified by its Connect account", account.id)
        return True
    if not payouts_enabled and account.verified_by == STRIPE_CONNECT:
        account.verified_at = None
        account.verified_by = None
        session.add(account)
        _withdraw_pending(session, account, now=now)
        log.warning("provider %s: Connect payouts disabled, no longer verified", account.id)
    return False


def refresh_connect(
    session: Session, rail: PaymentRail, account: Account, *, now: datetime
) -> Account:
    """Onboarding and every later check: make sure the provider has a Connect account, read
    its `payouts_enabled`, and update the verification (committed; matching runs if it
    became verified)."""
    from market.services.matching import run_matching
    from market.services.payouts import connected_account_id

    if account.role != "provider":
        raise InvalidInputError("only providers have a Connect account")
    if not rail.transfers:
        raise InvalidStateError(
            "this marketplace pays out without Stripe Connect: an operator approves providers"
        )
    external = connected_account_id(session, rail, account.id)
    enabled = rail.payouts_enabled(external)
    with unit_of_work(session):
        verified = apply_connect_status(session, account, enabled, now=now)
    if verified:
        run_matching(session, now=now)
    return account


def on_account_updated(session: Session, obj: dict[str, object], *, now: datetime) -> str:
    """Stripe's `account.updated` webhook for a connected account (committed)."""
    from market.services.matching import run_matching

    known = session.exec(
        select(ConnectedAccount).where(ConnectedAccount.external_id == str(obj.get("id")))
    ).first()
    account = session.get(Account, known.provider_id) if known is not None else None
    if account is None:
        return "unknown-account"
    with unit_of_work(session):
        verified = apply_connect_status(
            session, account, obj.get("payouts_enabled") is True, now=now
        )
    if verified:
        run_matching(session, now=now)
        return "verified"
    return "verified" if is_verified(account) else "unverified"
