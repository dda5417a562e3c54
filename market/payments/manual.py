"""The `manual` rail, the embedded default: an operator credits funding by hand
(`POST /v1/admin/jobs/{id}/credit`), refunds are recorded for the operator to return, and
payouts leave as a CSV batch the operator pays and then marks paid."""

from __future__ import annotations

from market.errors import InvalidStateError, WebhookSignatureError
from market.payments.base import Intent, PaymentRail, WebhookEvent


class ManualRail(PaymentRail):
    name = "manual"
    transfers = False

    def create_funding(self, *, job_id: str, amount_cents: int, currency: str, key: str) -> Intent:
        # Nothing to create: the money arrives when an operator credits it.
        return Intent(None, None, "manual", amount_cents)

    def funding_status(self, external_id: str) -> Intent:
        raise InvalidStateError("the manual rail has no payment to poll")

    def refund(
        self, *, funding_id: str | None, amount_cents: int, currency: str, key: str
    ) -> tuple[str | None, str]:
        return None, "recorded"

    def connected_account(self, *, provider_id: str, name: str, key: str) -> str:
        raise InvalidStateError("the manual rail pays out by CSV batch")

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
        raise InvalidStateError("the manual rail pays out by CSV batch")

    def parse_webhook(self, payload: bytes, signature: str | None) -> WebhookEvent:
        raise WebhookSignatureError("no Stripe webhook secret configured on this server")
