"""The dashboard's routes under /ui: parse, find the viewer, call `market.ui.pages`,
render. Sign-in exchanges an API key for a signed session cookie (`market.ui.session`).

Kept out of the OpenAPI schema: these are pages for people, not API.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from market import ratelimit
from market.api.deps import BlobsDep, NowDep, SessionDep, SettingsDep, blob_response
from market.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    TooManyFailedAttemptsError,
)
from market.models import Account
from market.services import accounts
from market.ui import pages
from market.ui import session as ui_session
from market.ui.render import HtmlRoute, page

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", route_class=HtmlRoute, include_in_schema=False)


def _secret(request: Request, settings: SettingsDep) -> bytes:
    secret: bytes | None = getattr(request.app.state, "ui_session_secret", None)
    if secret is None:
        secret = ui_session.load_secret(settings)
        request.app.state.ui_session_secret = secret
    return secret


SecretDep = Annotated[bytes, Depends(_secret)]


def _viewer(
    request: Request, session: SessionDep, secret: SecretDep, now: NowDep
) -> Account | None:
    account = ui_session.resolve(session, request.cookies.get(ui_session.COOKIE), secret, now=now)
    # Error pages rendered later in the request still show who is signed in.
    request.state.ui_viewer = account
    return account


Viewer = Annotated[Account | None, Depends(_viewer)]


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (`//host`, `https://...`)."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/account"


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site: login CSRF (signing a visitor into the
    attacker's account) and forced sign-out. Browsers send `Sec-Fetch-Site` and `Origin` on
    every cross-site POST; a client sending neither is not a browser another site drives."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise PermissionDeniedError("this form works only from the dashboard's own pages")
    origin = request.headers.get("origin")
    # The host only: behind a TLS proxy not listed in POLLEN_TRUSTED_PROXIES the server sees
    # http while the browser says https, and that is still the dashboard's own page.
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        raise PermissionDeniedError("this form works only from the dashboard's own pages")


SameOrigin = [Depends(_same_origin)]


@router.get("", response_class=HTMLResponse)
def marketplace(request: Request, viewer: Viewer, session: SessionDep, now: NowDep) -> Response:
    data = pages.marketplace(session, viewer, now=now)
    return page(request, "marketplace.html", viewer=viewer, title="Marketplace", page=data)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, viewer: Viewer, next: str | None = None) -> Response:
    return page(
        request, "login.html", viewer=viewer, title="Sign in", next=_safe_next(next), error=None
    )


@router.post("/login", response_class=HTMLResponse, dependencies=SameOrigin)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    secret: SecretDep,
    now: NowDep,
    api_key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Exchange an API key for a session cookie; a wrong key gets the form back (401)."""
    target = _safe_next(next)
    try:
        account = accounts.authenticate(session, api_key.strip())
    except AuthenticationError:
        try:
            # The same per-address limit as the API's bearer keys: the form is no side door.
            ratelimit.failed_authentication(request, session)
        except TooManyFailedAttemptsError as exc:
            refused = page(
                request, "login.html", viewer=None, title="Sign in", status_code=429,
                next=target, error="Too many failed sign-ins from this address. "
                f"Try again in {exc.retry_after} s.",
            )  # fmt: skip
            refused.headers["Retry-After"] = str(exc.retry_after)
            return refused
        log.info("dashboard sign-in refused from %s", ratelimit.client_address(request))
        return page(
            request, "login.html", viewer=None, title="Sign in", status_code=401, next=target,
            error="That API key is not valid. Check it and try again.",
        )  # fmt: skip
    signed_in = RedirectResponse(target, status_code=303)
    signed_in.set_cookie(
        ui_session.COOKIE,
        ui_session.issue(account, secret, now=now, ttl_s=settings.ui_session_ttl_s),
        max_age=settings.ui_session_ttl_s,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return signed_in


@router.post("/logout", dependencies=SameOrigin)
def logout() -> Response:
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(ui_session.COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str, viewer: Viewer, session: SessionDep) -> Response:
    data = pages.job_page(session, job_id, viewer)
    return page(request, "job.html", viewer=viewer, title=data.job.title, page=data)


@router.get("/jobs/{job_id}/model", response_class=Response)
def final_model(job_id: str, viewer: Viewer, session: SessionDep, blobs: BlobsDep) -> Response:
    """The final model as a download, on the dashboard's session (the cookie is scoped to
    /ui, so the API's route with its bearer key is out of a browser's reach)."""
    download = blob_response(pages.final_model(session, blobs, job_id, viewer))
    download.headers["Content-Disposition"] = f'attachment; filename="{job_id}.model.safetensors"'
    return download


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
def provider(
    request: Request, provider_id: str, viewer: Viewer, session: SessionDep, now: NowDep
) -> Response:
    data = pages.provider_page(session, provider_id, viewer, now=now)
    title = f"Provider {data.reputation.name}"
    return page(request, "provider.html", viewer=viewer, title=title, page=data)


@router.get("/providers/{provider_id}/payouts", response_class=HTMLResponse)
def provider_payouts(
    request: Request, provider_id: str, viewer: Viewer, session: SessionDep
) -> Response:
    data = pages.payouts_page(session, provider_id, viewer)
    title = f"Payouts of {data.provider.name}"
    return page(request, "payouts.html", viewer=viewer, title=title, page=data)


@router.get("/ledger", response_class=HTMLResponse)
def ledger(request: Request, viewer: Viewer, session: SessionDep) -> Response:
    data = pages.ledger_page(session, viewer)
    return page(request, "ledger.html", viewer=viewer, title="Ledger", page=data)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, viewer: Viewer, session: SessionDep) -> Response:
    data = pages.account_page(session, viewer)
    return page(request, "account.html", viewer=viewer, title="My account", page=data)


@router.get("/")
def trailing_slash() -> Response:
    return RedirectResponse("/ui", status_code=308)


@router.get("/{rest:path}", response_class=HTMLResponse)
def unknown(rest: str, viewer: Viewer) -> Response:
    raise NotFoundError(f"there is no page /ui/{rest}")
