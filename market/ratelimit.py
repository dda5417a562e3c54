"""Limits per client address over a sliding window, counted in the database.

Two things are counted per address: failed authentications (a wrong API key, on the API or
the dashboard's login form, which share one limit) and account registrations. The counts
live in the `rate_event` table, so every server process sees the same ones: a count kept in
one process's memory lets N processes take N times the limit.

**Failures are throttled, never the owner.** A correct key authenticates whatever its
address has done; only a wrong key from an address that already failed
`Settings.auth_fail_limit` times within `auth_fail_window_s` is refused with 429 (and
`Retry-After`, until the oldest counted failure leaves the window) instead of 401. Refusing
the correct key too would let anyone who shares the owner's address (a NAT, a proxy, or a
spoofed `X-Forwarded-For` when uvicorn believed it from loopback) lock the owner out with a
few wrong keys. Answering correct keys does leave 200-versus-429 to a guesser, which is
worthless against keys of 256 random bits (`market.services.accounts`); what the limit bounds
is the server's work: past it a wrong key costs one indexed read and writes nothing, so the
table holds at most `limit` rows per address and window, and rows older than the window are
pruned on every write.

**The address** is the ASGI server's client address. `market.server` has uvicorn believe
`X-Forwarded-For` only from `Settings.trusted_proxies` (nobody by default), so a client cannot
choose the address it is counted under.

Time is the app's clock (`app.state.clock`), so tests move it by hand instead of sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select
from starlette.requests import Request

from market.config import Settings
from market.errors import TooManyFailedAttemptsError, TooManyRegistrationsError
from market.models import RateEvent

__all__ = [
    "AUTH_FAILURE",
    "REGISTRATION",
    "SlidingWindow",
    "client_address",
    "count_registration",
    "failed_authentication",
]

AUTH_FAILURE = "auth-failure"
REGISTRATION = "registration"
_UNKNOWN = "unknown"
_SUBJECT_MAX = 64


@dataclass(frozen=True)
class SlidingWindow:
    """At most `limit` events of `scope` per subject within any `window_s` seconds."""

    scope: str
    limit: int
    window_s: float

    def retry_after(self, session: Session, subject: str, now: datetime) -> int | None:
        """Whole seconds until `subject` is under the limit again, or None if it is now."""
        since = now - timedelta(seconds=self.window_s)
        newest = session.exec(
            select(RateEvent.at)
            .where(RateEvent.scope == self.scope, RateEvent.subject == subject)
            .where(col(RateEvent.at) > since)
            .order_by(col(RateEvent.at).desc())
            .limit(self.limit)
        ).all()
        if len(newest) < self.limit:
            return None
        # Under the limit again once the oldest of the newest `limit` leaves the window.
        oldest = newest[-1]
        return max(1, math.ceil((oldest - since).total_seconds()))

    def record(self, session: Session, subject: str, now: datetime) -> None:
        """Count one event for `subject` at `now`, drop this scope's expired rows; commits."""
        since = now - timedelta(seconds=self.window_s)
        session.add(RateEvent(scope=self.scope, subject=subject, at=now))
        session.execute(
            delete(RateEvent).where(col(RateEvent.scope) == self.scope, col(RateEvent.at) <= since)
        )
        session.commit()  # counted on its own, whatever becomes of the request it counts


def auth_failures(settings: Settings) -> SlidingWindow:
    return SlidingWindow(AUTH_FAILURE, settings.auth_fail_limit, settings.auth_fail_window_s)


def registrations(settings: Settings) -> SlidingWindow:
    return SlidingWindow(REGISTRATION, settings.register_limit, settings.register_window_s)


def client_address(request: Request) -> str:
    """The address a request came from, as the ASGI server reports it (see the docstring)."""
    host = request.client.host if request.client is not None else _UNKNOWN
    return host[:_SUBJECT_MAX]


def _now(request: Request) -> datetime:
    # The app's clock, so tests can move time without sleeping.
    now: datetime = request.app.state.clock()
    return now


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def failed_authentication(request: Request, session: Session) -> None:
    """After a wrong key: 429 if its address is past the limit (nothing recorded), else count
    the failure so the caller answers 401."""
    window = auth_failures(_settings(request))
    address, now = client_address(request), _now(request)
    wait = window.retry_after(session, address, now)
    if wait is not None:
        session.rollback()
        raise TooManyFailedAttemptsError(
            f"too many failed authentication attempts from this address; "
            f"try again in {wait} s (a correct key is always accepted)",
            retry_after=wait,
        )
    window.record(session, address, now)


def count_registration(request: Request, session: Session) -> None:
    """Count a registration from the request's address; 429 past the limit (not counted)."""
    window = registrations(_settings(request))
    address, now = client_address(request), _now(request)
    wait = window.retry_after(session, address, now)
    if wait is not None:
        session.rollback()
        raise TooManyRegistrationsError(
            f"too many accounts registered from this address; try again in {wait} s",
            retry_after=wait,
        )
    window.record(session, address, now)
