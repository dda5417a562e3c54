"""The buyer's side of the `stripe` rail: confirm the job's PaymentIntent with a card.

In production the buyer's browser confirms with Stripe.js and the `client_secret`; against
localstripe (tests, the demo) the buyer's test key attaches Stripe's test card
`pm_card_visa` and confirms through the `stripe` SDK, the same two calls Stripe.js makes.
"""

from __future__ import annotations

from typing import Any

import stripe


def confirm_card_payment(
    payment_intent_id: str,
    *,
    api_key: str,
    api_base: str | None = None,
    payment_method: str = "pm_card_visa",
) -> str:
    """Attach the card and confirm; returns the PaymentIntent's status (`succeeded`)."""
    bases: Any = {"api": api_base.rstrip("/")} if api_base else None
    client = stripe.StripeClient(api_key, base_addresses=bases)
    client.v1.payment_intents.update(payment_intent_id, params={"payment_method": payment_method})
    intent = client.v1.payment_intents.confirm(payment_intent_id)
    return str(intent.status)
