"""The `stripe` rail, through the official `stripe` SDK.

- funding: a PaymentIntent for the job's budget (metadata `job_id`); the buyer confirms it with
  the `client_secret`; success is learned from the `payment_intent.succeeded` webhook
  (signature checked by `stripe.Webhook.construct_event`), or by polling the intent;
- refunds: a Refund on that PaymentIntent;
- payouts: Stripe Connect, one connected account per provider, one Transfer per provider and
  job (`transfer_group` = the job id). When no Connect base address is configured the rail
  pays out by CSV batch like the manual rail (localstripe has no Connect).

Every write carries an idempotency key. The API base addresses are configurable so tests and
the demo run against localstripe and a Connect double on loopback.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe

from market.errors import PaymentError, WebhookSignatureError
from market.payments.base import Intent, PaymentRail, WebhookEvent

log = logging.getLogger(__name__)


def _client(api_key: str, api_base: str | None) -> Any:
    bases: Any = {"api": api_base.rstrip("/")} if api_base else None
    return stripe.StripeClient(api_key, base_addresses=bases, max_network_retries=2)


class StripeRail(PaymentRail):
    name = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        webhook_secret: str | None = None,
        connect_api_base: str | None = None,
    ) -> None:
        self._api = _client(api_key, api_base)
        self._connect = _client(api_key, connect_api_base) if connect_api_base else None
        self._webhook_secret = webhook_secret
        self.transfers = self._connect is not None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            log.warning("stripe %s failed: %s", what, exc)
            raise PaymentError(f"Stripe {what} failed: {exc.user_message or exc}") from exc

    @staticmethod
    def _intent(pi: Any) -> Intent:
        status = "failed" if pi.status == "canceled" else str(pi.status)
        return Intent(str(pi.id), pi.client_secret, status, int(pi.amount))

    def create_funding(self, *, job_id: str, amount_cents: int, currency: str, key: str) -> Intent:
        pi = self._call(
            "PaymentIntent",
            self._api.v1.payment_intents.create,
            params={
                "amount": amount_cents,
                "currency": currency,
                "metadata": {"job_id": job_id},
                "payment_method_types": ["card"],
            },
            options={"idempotency_key": key},
        )
        return self._intent(pi)

    def funding_status(self, external_id: str) -> Intent:
        pi = self._call("PaymentIntent", self._api.v1.payment_intents.retrieve, external_id)
        return self._intent(pi)

    def refund(
        self, *, funding_id: str | None, amount_cents: int, currency: str, key: str
    ) -> tuple[str | None, str]:
        if funding_id is None:
            raise PaymentError("no PaymentIntent to refund")
        refund = self._call(
            "Refund",
            self._api.v1.refunds.create,
            params={"payment_intent": funding_id, "amount": amount_cents},
            options={"idempotency_key": key},
        )
        return str(refund.id), str(refund.status)

    def connected_account(self, *, provider_id: str, name: str, key: str) -> str:
        assert self._connect is not None
        account = self._call(
            "Connect account",
            self._connect.v1.accounts.create,
            params={
                "type": "express",
                "metadata": {"provider_id": provider_id},
                "business_profile": {"name": name},
                "capabilities": {"transfers": {"requested": True}},
            },
            options={"idempotency_key": key},
        )
        return str(account.id)

    def payouts_enabled(self, connected_id: str) -> bool:
        assert self._connect is not None
        account = self._call("Connect account", self._connect.v1.accounts.retrieve, connected_id)
        return bool(account.payouts_enabled)

    def transfer(
        self,
        *,
        destination: str,
        amount_cents: int,
        currency: str,
        transfer_group: str,
        key: str,
        metadata: dict[str, str],
    ) -> str:
        assert self._connect is not None
        transfer = self._call(
            "Transfer",
            self._connect.v1.transfers.create,
            params={
                "amount": amount_cents,
                "currency": currency,
                "destination": destination,
                "transfer_group": transfer_group,
                "metadata": metadata,
            },
            options={"idempotency_key": key},
        )
        return str(transfer.id)

    def parse_webhook(self, payload: bytes, signature: str | None) -> WebhookEvent:
        if not self._webhook_secret:
            raise WebhookSignatureError("no Stripe webhook secret configured on this server")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self._webhook_secret)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            raise WebhookSignatureError(f"webhook refused: {exc}") from exc
        obj = event["data"]["object"]
        return WebhookEvent(str(event["id"]), str(event["type"]), obj.to_dict())
