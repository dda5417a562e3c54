"""The HTTP side of the marketplace client: sending a request, reading an error, riding
out an outage.

`Transport` sends one request with the account's bearer key and turns every error answer
(`application/problem+json`) into `ApiError`, carrying the status, the problem `code` slug,
title, detail and the whole body. Uploads given as a `Path` are streamed from disk and
downloads written to a file as they arrive, never whole in memory.

`Backoff` lets the agent and the buyer ride out a server that is down or restarting: a call
that gets no answer (or a 5xx) is retried with exponential waits, with one log line when the
outage starts and one when it ends, until `give_up_after_s` passed without a single answer;
then `ServerUnreachableError`. Which failures are worth retrying is `is_transient`; which
requests can be repeated even when they do work, `never_sent`.

For tests, pass `http=` an existing `httpx.Client` (e.g. FastAPI's `TestClient`) or
`transport=` an `httpx.MockTransport`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "ApiError",
    "Backoff",
    "ServerUnreachableError",
    "Transport",
    "Upload",
    "is_transient",
    "never_sent",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

Upload = bytes | Path
_CHUNK = 1 << 20


class ApiError(Exception):
    """A refused request, parsed from the server's problem+json answer."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, body: dict[str, Any]
    ) -> None:
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text[:500]
            return cls(response.status_code, f"http-{response.status_code}", "HTTP error", text, {})
        return cls(
            status=int(body.get("status", response.status_code)),
            code=str(body.get("code", f"http-{response.status_code}")),
            title=str(body.get("title", "")),
            detail=str(body.get("detail", "")),
            body=body,
        )


class ServerUnreachableError(Exception):
    """The server gave no usable answer for longer than the client was told to wait."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: no answer at all (refused, reset, timed out) or a failure on the
    server's side (5xx); a 4xx is a decision the server made and retrying will not change."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiError) and exc.status >= 500


def never_sent(exc: BaseException) -> bool:
    """The request cannot have reached the server (no connection was made): safe to repeat
    even when repeating it would otherwise do the work twice."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class Backoff:
    """Retries transient failures with exponential waits for up to `give_up_after_s`.

    One instance follows one client through its life: the clock starts at the first failure
    of an outage and resets at the next success, so a server that restarts every hour is
    ridden out every time while one that stays down makes the caller give up.
    """

    def __init__(
        self,
        *,
        give_up_after_s: float = 300.0,
        first_wait_s: float = 0.5,
        max_wait_s: float = 10.0,
        notify: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.give_up_after_s = give_up_after_s
        self.first_wait_s = first_wait_s
        self.max_wait_s = max(max_wait_s, first_wait_s)
        self.notify = notify or (lambda msg: logger.warning("%s", msg))
        self._clock = clock
        self._sleep = sleep
        self._down_since: float | None = None
        self._wait = first_wait_s
        self._failures = 0

    @property
    def outage(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> None:
        """Wait before the next attempt, or raise `ServerUnreachableError` once out of time."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._wait = self.first_wait_s
            self._failures = 0
            self.notify(
                f"server unreachable ({_describe(exc)}); retrying for up to "
                f"{self.give_up_after_s:.0f}s"
            )
        self._failures += 1
        down_for = now - self._down_since
        if down_for >= self.give_up_after_s:
            self.notify(f"giving up: no answer from the server for {down_for:.0f}s")
            raise ServerUnreachableError(
                f"no answer from the server for {down_for:.0f}s "
                f"({self._failures} attempts): {_describe(exc)}"
            ) from exc
        wait = min(self._wait, self.give_up_after_s - down_for)
        logger.debug("attempt %d failed (%s); next in %.1fs", self._failures, exc, wait)
        self._sleep(wait)
        self._wait = min(self._wait * 2, self.max_wait_s)

    def succeeded(self) -> None:
        if self._down_since is not None:
            down_for = self._clock() - self._down_since
            self.notify(f"server reachable again after {down_for:.1f}s")
            self._down_since = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, retried while it fails transiently; `fn` must be safe to
        repeat (every caller re-derives what to do from the server's and its own state)."""
        return self.call_if(is_transient, fn, *args, **kwargs)

    def call_if(
        self,
        retry: Callable[[BaseException], bool],
        fn: Callable[..., T],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """`call`, retrying only the failures `retry` accepts (e.g. `never_sent` for a request
        that must not be repeated once the server may have seen it)."""
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not retry(exc):
                    raise
                self.failed(exc)
                continue
            self.succeeded()
            return result


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


class Transport:
    """One account's requests to one server: the bearer key on each, answers checked."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.api_key = api_key
        self._owned = http is None
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Upload | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The answer to one request; an error answer raises `ApiError`."""
        headers = {"Accept": "application/json, application/problem+json"}
        headers.update(extra_headers or {})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body: bytes | Iterator[bytes] | None = None
        if isinstance(content, Path):
            headers["Content-Length"] = str(content.stat().st_size)
            body = _file_chunks(content)
        elif content is not None:
            body = content
        if content is not None:
            headers["Content-Type"] = "application/octet-stream"
        response = self._http.request(method, path, json=json, content=body, headers=headers)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON document (see `send` for the arguments)."""
        return self.send(method, path, **kwargs).json()

    def binary(self, path: str) -> bytes:
        """A GET's binary answer, whole."""
        return self.send("GET", path).content

    def download(self, path: str, to: Path) -> str:
        """A GET's binary answer written to `to` as it arrives; returns its SHA-256 (hex)."""
        headers = {"Accept": "application/octet-stream, application/problem+json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        digest = hashlib.sha256()
        with self._http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            with to.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        return digest.hexdigest()
