"""Rate limiting of failed authentication, per client address, over a sliding window.

More than `Settings.auth_fail_limit` failed attempts from one address within
`Settings.auth_fail_window_s` seconds, and that address is refused with 429 (and
`Retry-After`) until the oldest of those failures leaves the window. The refusal applies to
every key the address sends, a correct one included: if a correct key still passed, 429 vs
200 would itself tell a guesser when it hit, and the limit would slow nothing. A request
that sends no key is not an attempt and is never counted.

One `AuthFailureLimiter` lives on each app (`for_app`), in process: API workers behind a load
balancer each count on their own, which bounds guessing per worker (see DESIGN, scale path).
Time is whatever the caller passes as `now` (seconds), so the service uses its own clock and
tests move it by hand instead of sleeping.

The public helpers `check(request)` and `record_failure(request)` are what any login
surface (the API's bearer auth, the dashboard's login form) calls, so they share one limit.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from typing import Any

from starlette.requests import Request

from market.errors import TooManyFailedAttemptsError

__all__ = [
    "AuthFailureLimiter",
    "check",
    "client_address",
    "for_app",
    "record_failure",
]

_UNKNOWN = "unknown"
# Addresses tracked at once; beyond this the least recently failed are forgotten first, so a
# flood of spoofed sources cannot grow the process without bound.
_MAX_ADDRESSES = 100_000


class AuthFailureLimiter:
    """Counts failed authentications per address in a sliding window; thread-safe."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, address: str, now: float) -> deque[float] | None:
        stamps = self._failures.get(address)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if not stamps:
            del self._failures[address]
            return None
        return stamps

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until `address` may try again, or None if it may try now."""
        with self._lock:
            stamps = self._live(address, now)
            if stamps is None or len(stamps) < self.limit:
                return None
            # Allowed again once the oldest counted failure leaves the window.
            return max(stamps[0] + self.window_s - now, 0.0)

    def check(self, address: str, now: float) -> None:
        """Refuse with `TooManyFailedAttemptsError` if `address` is over the limit."""
        wait = self.retry_after(address, now)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise TooManyFailedAttemptsError(
                f"too many failed authentication attempts from this address; "
                f"try again in {seconds} s",
                retry_after=seconds,
            )

    def record_failure(self, address: str, now: float) -> None:
        """Count one failed attempt from `address` at `now`."""
        with self._lock:
            stamps = self._live(address, now)
            if stamps is None:
                while len(self._failures) >= _MAX_ADDRESSES:
                    self._failures.popitem(last=False)
                stamps = self._failures.setdefault(address, deque())
            # Most recently failed last, so eviction drops the quietest address first.
            self._failures.move_to_end(address)
            stamps.append(now)
            # Only the newest `limit` failures can matter for the decision.
            while len(stamps) > self.limit:
                stamps.popleft()

    def tracked(self) -> int:
        """How many addresses currently have failures on record."""
        with self._lock:
            return len(self._failures)


_create_lock = threading.Lock()


def for_app(app: Any) -> AuthFailureLimiter:
    """The app's limiter, created on first use from its settings."""
    limiter: AuthFailureLimiter | None = getattr(app.state, "auth_limiter", None)
    if limiter is not None:
        return limiter
    with _create_lock:
        limiter = getattr(app.state, "auth_limiter", None)
        if limiter is None:
            settings = app.state.settings
            limiter = AuthFailureLimiter(
                limit=settings.auth_fail_limit, window_s=settings.auth_fail_window_s
            )
            app.state.auth_limiter = limiter
        return limiter


def client_address(request: Request) -> str:
    """The address a request came from (as the ASGI server reports it)."""
    return request.client.host if request.client is not None else _UNKNOWN


def _now(request: Request) -> float:
    # The app's clock, so tests can move time without sleeping.
    return float(request.app.state.clock().timestamp())


def check(request: Request) -> None:
    """Refuse the request with 429 if its address failed authentication too often."""
    for_app(request.app).check(client_address(request), _now(request))


def record_failure(request: Request) -> None:
    """Count a failed authentication (unknown key, bad login) from the request's address."""
    for_app(request.app).record_failure(client_address(request), _now(request))
