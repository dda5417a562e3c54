"""Dataset listings: publish, read, update, withdraw. Any change re-runs matching.

Each change is an entry point: one unit of work (`market.db.unit_of_work`), then a matching
pass in its own transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from market.config import Settings
from market.db import unit_of_work
from market.errors import InvalidStateError, PermissionDeniedError
from market.lifecycle import ListingState, OfferState
from market.models import Account, Listing, ListingCreate, ListingPublic, ListingUpdate, Offer
from market.models.types import new_id
from market.services import access, quotas
from market.services.matching import run_matching

log = logging.getLogger(__name__)

DEFAULT_MAX_LISTINGS: int = Settings.model_fields["max_listings_per_provider"].default


def public(listing: Listing) -> ListingPublic:
    return ListingPublic.model_validate({**listing.model_dump(), "schema": listing.dataset_schema})


def create_listing(
    session: Session,
    provider: Account,
    data: ListingCreate,
    *,
    now: datetime,
    max_listings: int = DEFAULT_MAX_LISTINGS,
) -> Listing:
    """Publish a listing, within the provider's quota of active listings (409 past it)."""
    if provider.role != "provider":
        raise PermissionDeniedError("only providers publish listings")
    listing = Listing(
        id=new_id("lst"),
        provider_id=provider.id,
        name=data.name,
        dataset_schema=data.dataset_schema.model_dump(mode="json"),
        samples=data.samples,
        ask_cents=data.ask_cents,
        currency=data.currency,
        capacity=data.capacity,
        created_at=now,
        updated_at=now,
    )
    with unit_of_work(session):
        quotas.reserve_listing(session, provider.id, limit=max_listings)
        session.add(listing)
    log.info("provider %s listed %s", provider.id, listing.id)
    run_matching(session, now=now)
    return listing


def list_listings(session: Session, viewer: Account) -> Sequence[Listing]:
    stmt = select(Listing).order_by(col(Listing.created_at), col(Listing.id))
    if viewer.role != "admin":
        stmt = stmt.where(Listing.provider_id == viewer.id)
    return session.exec(stmt).all()


def update_listing(
    session: Session, viewer: Account, listing_id: str, data: ListingUpdate, *, now: datetime
) -> Listing:
    listing = access.owned_listing(session, listing_id, viewer)
    if listing.provider_id != viewer.id:
        raise PermissionDeniedError("only the listing's provider may change it")
    if listing.state != ListingState.ACTIVE:
        raise InvalidStateError("a withdrawn listing cannot change")
    # Changes apply to future offers only; offers already sent keep their price and samples.
    with unit_of_work(session):
        for field, value in data.model_dump(exclude_none=True).items():
            setattr(listing, field, value)
        listing.updated_at = now
        session.add(listing)
    run_matching(session, now=now)
    return listing


def withdraw_listing(
    session: Session, viewer: Account, listing_id: str, *, now: datetime
) -> Listing:
    """Stop offering the listing; pending offers are withdrawn, accepted ones run to the end."""
    listing = access.owned_listing(session, listing_id, viewer)
    if listing.provider_id != viewer.id:
        raise PermissionDeniedError("only the listing's provider may withdraw it")
    if listing.state == ListingState.WITHDRAWN:
        return listing
    with unit_of_work(session):
        listing.state = ListingState.WITHDRAWN
        listing.updated_at = now
        session.add(listing)
        pending = session.exec(
            select(Offer).where(Offer.listing_id == listing.id, Offer.state == OfferState.PENDING)
        ).all()
        for offer in pending:
            offer.state = OfferState.WITHDRAWN
            offer.decided_at = now
            session.add(offer)
    run_matching(session, now=now)
    return listing
