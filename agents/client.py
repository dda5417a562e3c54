"""Typed HTTP client for the Pollen marketplace API (one method per endpoint).

Every error answer is `application/problem+json`; it is raised as `ApiError` carrying the
status, the problem `code` slug, title, detail and the whole body (a duplicate submission's
body holds the first receipt under `first`). Large uploads given as a `Path` are streamed
from disk rather than read into memory.

    client = PollenClient("http://127.0.0.1:8000", api_key)
    job = client.create_job(spec)
    client.put_context(job.id, keys.public_context().to_bytes())

Answers come back as the wire contract's views (:mod:`dataspec.views`, the server's response
models), parsed with `model_validate`; a field the server adds later is ignored. The admin,
money and transparency-log answers are still plain JSON (`Json`).

For tests, pass `http=` an existing `httpx.Client` (e.g. FastAPI's `TestClient`) or
`transport=` an `httpx.MockTransport`.

`Backoff` lets the agent and the buyer ride out a server that is down or restarting: a call
that gets no answer (or a 5xx) is retried with exponential waits, with one log line when the
outage starts and one when it ends, until `give_up_after_s` passed without a single answer;
then `ServerUnreachableError`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dataspec.views import (
    AccountCreated,
    AccountPublic,
    JobFunding,
    JobPublic,
    ListingPublic,
    MatchingPublic,
    OfferPublic,
    PrivacyReportPublic,
    RoundPublic,
    SubmissionReceipt,
)

__all__ = [
    "ApiError",
    "Backoff",
    "PollenClient",
    "ServerUnreachableError",
    "is_transient",
    "never_sent",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

Json = dict[str, Any]
Upload = bytes | Path
_CHUNK = 1 << 20


class ApiError(Exception):
    """A refused request, parsed from the server's problem+json answer."""

    def __init__(self, status: int, code: str, title: str, detail: str, body: Json) -> None:
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


class PollenClient:
    """The marketplace API as methods; answers come back as typed views, binaries as bytes."""

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

    def __enter__(self) -> PollenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Upload | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _bytes(self, path: str) -> bytes:
        return self._send("GET", path).content

    # -- accounts ------------------------------------------------------------------------

    def register(self, *, role: str, name: str) -> AccountCreated:
        """Create a buyer or provider account; the answer holds the only copy of its key."""
        return AccountCreated.model_validate(
            self._json("POST", "/v1/accounts", json={"role": role, "name": name})
        )

    def me(self) -> AccountPublic:
        return AccountPublic.model_validate(self._json("GET", "/v1/accounts/me"))

    # -- listings (provider) -------------------------------------------------------------

    def create_listing(self, body: Json) -> ListingPublic:
        return ListingPublic.model_validate(self._json("POST", "/v1/listings", json=body))

    def list_listings(self) -> list[ListingPublic]:
        return [ListingPublic.model_validate(x) for x in self._json("GET", "/v1/listings")]

    def get_listing(self, listing_id: str) -> ListingPublic:
        return ListingPublic.model_validate(self._json("GET", f"/v1/listings/{listing_id}"))

    def update_listing(self, listing_id: str, changes: Json) -> ListingPublic:
        return ListingPublic.model_validate(
            self._json("PATCH", f"/v1/listings/{listing_id}", json=changes)
        )

    def withdraw_listing(self, listing_id: str) -> ListingPublic:
        return ListingPublic.model_validate(self._json("DELETE", f"/v1/listings/{listing_id}"))

    # -- jobs (buyer) --------------------------------------------------------------------

    def create_job(self, spec: Json) -> JobPublic:
        return JobPublic.model_validate(self._json("POST", "/v1/jobs", json=spec))

    def list_jobs(self) -> list[JobPublic]:
        return [JobPublic.model_validate(x) for x in self._json("GET", "/v1/jobs")]

    def get_job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def put_context(self, job_id: str, context: Upload) -> JobPublic:
        return JobPublic.model_validate(
            self._json("PUT", f"/v1/jobs/{job_id}/context", content=context)
        )

    def get_context(self, job_id: str) -> bytes:
        return self._bytes(f"/v1/jobs/{job_id}/context")

    def put_model(self, job_id: str, model: Upload) -> JobPublic:
        return JobPublic.model_validate(
            self._json("PUT", f"/v1/jobs/{job_id}/model", content=model)
        )

    def fund_job(self, job_id: str) -> JobFunding:
        return JobFunding.model_validate(self._json("POST", f"/v1/jobs/{job_id}/fund"))

    def get_matching(self, job_id: str) -> MatchingPublic:
        """How many listings fit the job and why the others are left out (the buyer)."""
        return MatchingPublic.model_validate(self._json("GET", f"/v1/jobs/{job_id}/matching"))

    def cancel_job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def complete_job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self._json("POST", f"/v1/jobs/{job_id}/complete"))

    def put_final_model(self, job_id: str, model: Upload) -> JobPublic:
        return JobPublic.model_validate(
            self._json("PUT", f"/v1/jobs/{job_id}/final-model", content=model)
        )

    def get_final_model(self, job_id: str) -> bytes:
        return self._bytes(f"/v1/jobs/{job_id}/final-model")

    # -- admin ---------------------------------------------------------------------------

    def credit_job(self, job_id: str, amount_cents: int, reference: str | None = None) -> Json:
        body: Json = {"amount_cents": amount_cents}
        if reference is not None:
            body["reference"] = reference
        result: Json = self._json("POST", f"/v1/admin/jobs/{job_id}/credit", json=body)
        return result

    def tick(self) -> Json:
        result: Json = self._json("POST", "/v1/admin/tick")
        return result

    def approve_provider(self, account_id: str) -> AccountPublic:
        """Operator: verify a provider (it is matched to jobs and counts toward quorums)."""
        return AccountPublic.model_validate(
            self._json("POST", f"/v1/admin/providers/{account_id}/approve")
        )

    def revoke_provider(self, account_id: str) -> AccountPublic:
        return AccountPublic.model_validate(
            self._json("POST", f"/v1/admin/providers/{account_id}/revoke")
        )

    def connect(self) -> AccountPublic:
        """Provider, Stripe rail: create or re-read its Connect account (verification)."""
        return AccountPublic.model_validate(self._json("POST", "/v1/accounts/me/connect"))

    # -- offers (provider) ---------------------------------------------------------------

    def list_offers(self) -> list[OfferPublic]:
        return [OfferPublic.model_validate(x) for x in self._json("GET", "/v1/offers")]

    def accept_offer(self, offer_id: str) -> OfferPublic:
        return OfferPublic.model_validate(self._json("POST", f"/v1/offers/{offer_id}/accept"))

    def decline_offer(self, offer_id: str) -> OfferPublic:
        return OfferPublic.model_validate(self._json("POST", f"/v1/offers/{offer_id}/decline"))

    # -- rounds --------------------------------------------------------------------------

    def get_round(self, job_id: str, number: int) -> RoundPublic:
        return RoundPublic.model_validate(self._json("GET", f"/v1/jobs/{job_id}/rounds/{number}"))

    def get_round_model(self, job_id: str, number: int) -> bytes:
        return self._bytes(f"/v1/jobs/{job_id}/rounds/{number}/model")

    def publish_model(self, job_id: str, number: int, model: Upload) -> RoundPublic:
        """The buyer's global model for round `number` (the previous round must be closed)."""
        path = f"/v1/jobs/{job_id}/rounds/{number}/model"
        return RoundPublic.model_validate(self._json("PUT", path, content=model))

    def submit(
        self,
        job_id: str,
        number: int,
        envelope: Upload,
        *,
        signature: str | None = None,
        in_progress_wait_s: float = 120.0,
    ) -> SubmissionReceipt:
        """Upload an encrypted update; a duplicate raises ApiError(409) with `body["first"]`.

        `signature`: the provider's Ed25519 signature of the envelope's header hash, sent as
        the `Pollen-Signature` header (the envelope format itself is unchanged).

        While an earlier upload of ours is still under way on the server (one cut off by a
        crash or a timeout: 409 `upload-in-progress`), wait as told and send again, for up to
        `in_progress_wait_s`; the earlier one either lands (the retry is then a duplicate)
        or its claim goes stale."""
        path = f"/v1/jobs/{job_id}/rounds/{number}/submission"
        headers = {"Pollen-Signature": signature} if signature else None
        give_up = time.monotonic() + in_progress_wait_s
        while True:
            try:
                answer = self._json("PUT", path, content=envelope, extra_headers=headers)
                return SubmissionReceipt.model_validate(answer)
            except ApiError as exc:
                if exc.code != "upload-in-progress" or time.monotonic() >= give_up:
                    raise
                wait = float(exc.body.get("retry_after") or 1)
                time.sleep(min(max(wait, 0.2), max(give_up - time.monotonic(), 0.0), 10.0))

    def get_aggregate(self, job_id: str, number: int) -> bytes:
        return self._bytes(f"/v1/jobs/{job_id}/rounds/{number}/aggregate")

    def download_aggregate(self, job_id: str, number: int, path: Path) -> str:
        """The round's aggregate written to `path` as it arrives, never whole in memory;
        returns its SHA-256 (hex)."""
        return self._download(f"/v1/jobs/{job_id}/rounds/{number}/aggregate", path)

    def download_group_aggregate(self, job_id: str, number: int, index: int, path: Path) -> str:
        """`get_group_aggregate` written to `path` as it arrives; returns its SHA-256 (hex)."""
        url = f"/v1/jobs/{job_id}/rounds/{number}/groups/{index}/aggregate"
        return self._download(url, path)

    def _download(self, url: str, path: Path) -> str:
        headers = {"Accept": "application/octet-stream, application/problem+json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        digest = hashlib.sha256()
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            with path.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        return digest.hexdigest()

    def get_group_aggregate(self, job_id: str, number: int, index: int) -> bytes:
        """One random group's encrypted sum of a closed round (buyer only)."""
        return self._bytes(f"/v1/jobs/{job_id}/rounds/{number}/groups/{index}/aggregate")

    def post_group_values(self, job_id: str, number: int, groups: list[Json]) -> RoundPublic:
        """The buyer's loss before and after each group's average update."""
        path = f"/v1/jobs/{job_id}/rounds/{number}/groups"
        return RoundPublic.model_validate(self._json("POST", path, json={"groups": groups}))

    def post_metrics(self, job_id: str, number: int, metrics: Json) -> RoundPublic:
        path = f"/v1/jobs/{job_id}/rounds/{number}/metrics"
        return RoundPublic.model_validate(self._json("POST", path, json=metrics))

    def report_privacy(
        self, job_id: str, number: int, epsilon: float, delta: float
    ) -> PrivacyReportPublic:
        """Tell the marketplace the ε this provider has spent on the job up to this round."""
        body = {"round": number, "epsilon": epsilon, "delta": delta}
        return PrivacyReportPublic.model_validate(
            self._json("POST", f"/v1/jobs/{job_id}/privacy", json=body)
        )

    def get_privacy(self, job_id: str) -> list[PrivacyReportPublic]:
        """ε spent per provider on a job (a provider sees only its own)."""
        return [
            PrivacyReportPublic.model_validate(x)
            for x in self._json("GET", f"/v1/jobs/{job_id}/privacy")
        ]

    # -- identities and the transparency log ---------------------------------------------

    def register_identity(self, record: Json) -> Json:
        """Register this account's Ed25519 key from its self-signed identity record."""
        result: Json = self._json("PUT", "/v1/accounts/me/identity", json=record)
        return result

    def get_identity(self, account_id: str) -> Json:
        result: Json = self._json("GET", f"/v1/accounts/{account_id}/identity")
        return result

    def log_key(self) -> Json:
        result: Json = self._json("GET", "/v1/log/key")
        return result

    def log_head(self) -> Json:
        result: Json = self._json("GET", "/v1/log/head")
        return result

    def log_consistency(self, first: int, second: int) -> Json:
        result: Json = self._json("GET", f"/v1/log/consistency?first={first}&second={second}")
        return result

    def log_inclusion(self, index: int, size: int) -> Json:
        result: Json = self._json("GET", f"/v1/log/inclusion?index={index}&size={size}")
        return result

    def log_leaf(self, index: int) -> Json:
        result: Json = self._json("GET", f"/v1/log/leaves/{index}")
        return result

    def job_records(self, job_id: str) -> list[Json]:
        """The job's signed records (manifest, models, acceptances, closes) from the log."""
        result: list[Json] = self._json("GET", f"/v1/jobs/{job_id}/records")
        return result

    def my_records(self) -> list[Json]:
        """The server-signed settlement and payout records about this account, with proofs."""
        result: list[Json] = self._json("GET", "/v1/accounts/me/records")
        return result

    def put_manifest(self, job_id: str, record: Json) -> Json:
        result: Json = self._json("PUT", f"/v1/jobs/{job_id}/manifest", json=record)
        return result

    def post_record(self, job_id: str, record: Json) -> Json:
        result: Json = self._json("POST", f"/v1/jobs/{job_id}/records", json=record)
        return result

    # -- money and reputation --------------------------------------------------------------

    def payouts(self) -> Json:
        """A provider's own earnings and payouts; an admin's view holds everyone's."""
        result: Json = self._json("GET", "/v1/payouts")
        return result

    def run_payouts(self) -> Json:
        """Admin: pay every provider what it is owed (transfers, or a CSV batch)."""
        result: Json = self._json("POST", "/v1/admin/payouts/run")
        return result

    def mark_payout_batch_paid(self, batch_id: str) -> Json:
        result: Json = self._json("POST", f"/v1/admin/payouts/{batch_id}/mark-paid")
        return result

    def reputations(self) -> list[Json]:
        result: list[Json] = self._json("GET", "/v1/reputation")
        return result

    def reputation(self, provider_id: str) -> Json:
        result: Json = self._json("GET", f"/v1/reputation/{provider_id}")
        return result

    def verify_ledger(self) -> Json:
        result: Json = self._json("GET", "/v1/ledger/verify")
        return result

    def receipt(self, job_id: str) -> Json:
        result: Json = self._json("GET", f"/v1/jobs/{job_id}/receipt")
        return result
