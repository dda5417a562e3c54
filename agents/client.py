"""Typed HTTP client for the Pollen marketplace API (one method per endpoint).

    client = PollenClient("http://127.0.0.1:8000", api_key)
    job = client.create_job(spec)
    client.put_context(job.id, keys.public_context().to_bytes())

Answers come back as the wire contract's views (:mod:`dataspec.views`, :mod:`dataspec.money`,
:mod:`dataspec.records`: the server's response models), parsed with `model_validate`; a
field the server adds later is ignored. Binaries come back as bytes, or are written to a
file as they arrive.

Every error answer is raised as `ApiError` (a duplicate submission's body holds the first
receipt under `first`); sending, streaming and riding out an outage (`Backoff`) live in
:mod:`agents.http` and are re-exported here. For tests, pass `http=` an existing
`httpx.Client` (e.g. FastAPI's `TestClient`) or `transport=` an `httpx.MockTransport`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from agents.http import (
    ApiError,
    Backoff,
    ServerUnreachableError,
    Transport,
    Upload,
    is_transient,
    never_sent,
)
from dataspec.money import (
    CreditCreate,
    CreditPublic,
    LedgerReport,
    PayoutBatchPublic,
    PayoutRun,
    PayoutsView,
    Receipt,
    ReputationPublic,
)
from dataspec.records import Identity, Inclusion, Leaf, LoggedRecord, Proof, ServerKey, SignedRecord
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
    TickResult,
)

__all__ = [
    "ApiError",
    "Backoff",
    "PollenClient",
    "ServerUnreachableError",
    "is_transient",
    "never_sent",
]

Json = dict[str, Any]
V = TypeVar("V", bound=BaseModel)


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
        self._api = Transport(base_url, api_key, timeout=timeout, transport=transport, http=http)

    @property
    def api_key(self) -> str | None:
        return self._api.api_key

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> PollenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._api.json(method, path, **kwargs)

    def _bytes(self, path: str) -> bytes:
        return self._api.binary(path)

    def _view(self, view: type[V], method: str, path: str, **kwargs: Any) -> V:
        return view.model_validate(self._api.json(method, path, **kwargs))

    def _views(self, view: type[V], path: str) -> list[V]:
        return [view.model_validate(x) for x in self._api.json("GET", path)]

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

    def credit_job(
        self, job_id: str, amount_cents: int, reference: str | None = None
    ) -> CreditPublic:
        credit = CreditCreate(amount_cents=amount_cents, reference=reference)
        body = credit.model_dump(mode="json", exclude_none=True)
        return self._view(CreditPublic, "POST", f"/v1/admin/jobs/{job_id}/credit", json=body)

    def tick(self) -> TickResult:
        return self._view(TickResult, "POST", "/v1/admin/tick")

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
        return self._api.download(url, path)

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

    def register_identity(self, record: Json) -> Identity:
        """Register this account's Ed25519 key from its self-signed identity record."""
        return self._view(Identity, "PUT", "/v1/accounts/me/identity", json=record)

    def get_identity(self, account_id: str) -> Identity:
        return self._view(Identity, "GET", f"/v1/accounts/{account_id}/identity")

    def log_key(self) -> ServerKey:
        return self._view(ServerKey, "GET", "/v1/log/key")

    def log_head(self) -> SignedRecord:
        """The log's signed tree head: a `tree-head` record over its size, root and time."""
        return self._view(SignedRecord, "GET", "/v1/log/head")

    def log_consistency(self, first: int, second: int) -> Proof:
        return self._view(Proof, "GET", f"/v1/log/consistency?first={first}&second={second}")

    def log_inclusion(self, index: int, size: int) -> Inclusion:
        return self._view(Inclusion, "GET", f"/v1/log/inclusion?index={index}&size={size}")

    def log_leaf(self, index: int) -> Leaf:
        return self._view(Leaf, "GET", f"/v1/log/leaves/{index}")

    def job_records(self, job_id: str) -> list[LoggedRecord]:
        """The job's signed records (manifest, models, acceptances, closes) from the log."""
        return self._views(LoggedRecord, f"/v1/jobs/{job_id}/records")

    def my_records(self) -> list[LoggedRecord]:
        """The server-signed settlement and payout records about this account, with proofs."""
        return self._views(LoggedRecord, "/v1/accounts/me/records")

    def put_manifest(self, job_id: str, record: Json) -> LoggedRecord:
        return self._view(LoggedRecord, "PUT", f"/v1/jobs/{job_id}/manifest", json=record)

    def post_record(self, job_id: str, record: Json) -> LoggedRecord:
        return self._view(LoggedRecord, "POST", f"/v1/jobs/{job_id}/records", json=record)

    # -- money and reputation --------------------------------------------------------------

    def payouts(self) -> PayoutsView:
        """A provider's own earnings and payouts; an admin's view holds everyone's."""
        return self._view(PayoutsView, "GET", "/v1/payouts")

    def run_payouts(self) -> PayoutRun:
        """Admin: pay every provider what it is owed (transfers, or a CSV batch)."""
        return self._view(PayoutRun, "POST", "/v1/admin/payouts/run")

    def mark_payout_batch_paid(self, batch_id: str) -> PayoutBatchPublic:
        path = f"/v1/admin/payouts/{batch_id}/mark-paid"
        return self._view(PayoutBatchPublic, "POST", path)

    def reputations(self) -> list[ReputationPublic]:
        return self._views(ReputationPublic, "/v1/reputation")

    def reputation(self, provider_id: str) -> ReputationPublic:
        return self._view(ReputationPublic, "GET", f"/v1/reputation/{provider_id}")

    def verify_ledger(self) -> LedgerReport:
        return self._view(LedgerReport, "GET", "/v1/ledger/verify")

    def receipt(self, job_id: str) -> Receipt:
        return self._view(Receipt, "GET", f"/v1/jobs/{job_id}/receipt")
