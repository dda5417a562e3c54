"""Payment rails (`manual`, `stripe`) behind one interface, chosen by the Settings."""

from market.config import Settings
from market.payments.base import Intent, PaymentRail, WebhookEvent
from market.payments.manual import ManualRail
from market.payments.stripe_rail import StripeRail

__all__ = [
    "Intent",
    "ManualRail",
    "PaymentRail",
    "StripeRail",
    "WebhookEvent",
    "rail_for",
]


def rail_for(settings: Settings) -> PaymentRail:
    """`stripe` when a Stripe key is configured, else the `manual` rail."""
    if settings.stripe_api_key:
        return StripeRail(
            api_key=settings.stripe_api_key,
            api_base=settings.stripe_api_base,
            webhook_secret=settings.stripe_webhook_secret,
            connect_api_base=settings.stripe_connect_api_base,
        )
    return ManualRail()
