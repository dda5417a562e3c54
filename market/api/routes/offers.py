"""Offers a provider accepts or declines before they expire."""

from __future__ import annotations

from fastapi import APIRouter

from market.api.deps import NowDep, ProviderAccount, ProviderOrAdmin, SessionDep
from market.models import Job, Offer, OfferPublic
from market.services import offers

router = APIRouter(prefix="/v1/offers", tags=["offers"])


@router.get("", response_model=list[OfferPublic])
def list_(account: ProviderOrAdmin, session: SessionDep) -> list[OfferPublic]:
    return offers.list_offers(session, account)


def _public(session: SessionDep, offer: Offer) -> OfferPublic:
    job = session.get(Job, offer.job_id)
    assert job is not None
    return offers.public(offer, job)


@router.post("/{offer_id}/accept", response_model=OfferPublic)
def accept(
    offer_id: str, account: ProviderAccount, session: SessionDep, now: NowDep
) -> OfferPublic:
    return _public(session, offers.accept(session, offer_id, account, now=now))


@router.post("/{offer_id}/decline", response_model=OfferPublic)
def decline(
    offer_id: str, account: ProviderAccount, session: SessionDep, now: NowDep
) -> OfferPublic:
    return _public(session, offers.decline(session, offer_id, account, now=now))
