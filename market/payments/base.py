"""The payment-rail interface: how money enters (funding), leaves to the buyer (refunds) and
leaves to providers (payouts). The ledger records; a rail moves real money.

Rails never touch the database: `market.payments.service` calls them with plain values and
idempotency keys, and records what they answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from market.errors import InvalidStateError


@dataclass(frozen=True)
class Intent:
    """A funding request as the rail sees it."""

    external_id: str | None
    client_secret: str | None
    status: str  # requires_payment_method, processing, succeeded, failed, manual
    amount_cents: int


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    object: dict[str, Any]


class PaymentRail(ABC):
    """One way of moving money; `name` is what receipts and the ledger's memos show."""

    name: str
    # True when payouts leave as transfers; False when they are exported as a CSV batch.
    transfers: bool

    @abstractmethod
    def create_funding(
        self, *, job_id: str, amount_cents: int, currency: str, key: str
    ) -> Intent: ...

    @abstractmethod
    def funding_status(self, external_id: str) -> Intent: ...

    @abstractmethod
    def refund(
        self, *, funding_id: str | None, amount_cents: int, currency: str, key: str
    ) -> tuple[str | None, str]:
        """Return the refund's (external id, status)."""

    @abstractmethod
    def connected_account(self, *, provider_id: str, name: str, key: str) -> str: ...

    def payouts_enabled(self, connected_id: str) -> bool:
        """Whether a connected account may receive payouts (Stripe's `payouts_enabled`)."""
        raise InvalidStateError(f"the {self.name} rail has no connected accounts")

    @abstractmethod
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
        """Send money to a connected account; returns the transfer id."""

    @abstractmethod
    def parse_webhook(self, payload: bytes, signature: str | None) -> WebhookEvent: ...
