"""Dataset listings (providers; admins may read all)."""

from __future__ import annotations

from fastapi import APIRouter

from market.api.deps import NowDep, ProviderAccount, ProviderOrAdmin, SessionDep, SettingsDep
from market.models import ListingCreate, ListingPublic, ListingUpdate
from market.services import access, listings

router = APIRouter(prefix="/v1/listings", tags=["listings"])


@router.post("", status_code=201, response_model=ListingPublic)
def create(
    body: ListingCreate,
    account: ProviderAccount,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
) -> ListingPublic:
    """Publish a listing; past `POLLEN_MAX_LISTINGS_PER_PROVIDER` active ones, 409."""
    listing = listings.create_listing(
        session, account, body, now=now, max_listings=settings.max_listings_per_provider
    )
    return listings.public(listing)


@router.get("", response_model=list[ListingPublic])
def list_(account: ProviderOrAdmin, session: SessionDep) -> list[ListingPublic]:
    return [listings.public(li) for li in listings.list_listings(session, account)]


@router.get("/{listing_id}", response_model=ListingPublic)
def get(listing_id: str, account: ProviderOrAdmin, session: SessionDep) -> ListingPublic:
    return listings.public(access.owned_listing(session, listing_id, account))


@router.patch("/{listing_id}", response_model=ListingPublic)
def update(
    listing_id: str, body: ListingUpdate, account: ProviderOrAdmin, session: SessionDep, now: NowDep
) -> ListingPublic:
    return listings.public(listings.update_listing(session, account, listing_id, body, now=now))


@router.delete("/{listing_id}", response_model=ListingPublic)
def withdraw(
    listing_id: str, account: ProviderOrAdmin, session: SessionDep, now: NowDep
) -> ListingPublic:
    return listings.public(listings.withdraw_listing(session, account, listing_id, now=now))
