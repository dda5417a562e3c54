"""Account registration and the caller's own account."""

from __future__ import annotations

from fastapi import APIRouter, Request

from market import ratelimit
from market.api.deps import CurrentAccount, NowDep, ProviderAccount, RailDep, SessionDep
from market.models import AccountCreate, AccountCreated, AccountPublic
from market.services import accounts, verification

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.post("", status_code=201, response_model=AccountCreated)
def register(body: AccountCreate, request: Request, session: SessionDep) -> AccountCreated:
    """Create a buyer or provider account; the API key is shown only in this response.

    Registrations are limited per address (`POLLEN_REGISTER_LIMIT` per
    `POLLEN_REGISTER_WINDOW_S`, in every process together): past it, 429 with Retry-After.
    """
    ratelimit.count_registration(request, session)
    return accounts.create_account(session, role=body.role, name=body.name)


@router.get("/me", response_model=AccountPublic)
def me(account: CurrentAccount) -> AccountPublic:
    return accounts.public(account)


@router.post("/me/connect", response_model=AccountPublic)
def connect(
    account: ProviderAccount, session: SessionDep, rail: RailDep, now: NowDep
) -> AccountPublic:
    """Stripe rail: create the provider's Connect account if needed and read whether it can
    receive payouts; while it can, the provider is verified (matched, counted in quorums).
    Call it again after finishing Stripe's onboarding."""
    return accounts.public(verification.refresh_connect(session, rail, account, now=now))
