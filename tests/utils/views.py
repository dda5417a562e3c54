"""The server's answers as an agent reads them, for tests that stand in for the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dataspec.views import JobPublic, MatchingPublic, OfferPublic

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def offer_view(**over: Any) -> OfferPublic:
    """A pending offer of job `j1` (fields given in `over` replace the defaults)."""
    body: dict[str, Any] = {
        "id": "o1", "job_id": "j1", "job_title": "t", "listing_id": "l1",
        "provider_id": "p1", "state": "pending", "price_cents": 100, "currency": "usd",
        "samples": 100, "rounds": 1, "expires_at": NOW, "created_at": NOW, "decided_at": None,
    }  # fmt: skip
    return OfferPublic.model_validate({**body, **over})


def job_view(spec: dict[str, Any] | None = None, **over: Any) -> JobPublic:
    """A job whose spec holds `spec` (a schema and a model at least) over small defaults."""
    spec = dict(spec or {})
    if "schema" in spec:
        classes = spec["schema"].get("label", {}).get("classes")
        spec.setdefault("task", "classification" if classes else "regression")
    spec = {"title": "t", "rounds": 1, "budget_cents": 100, "price_cap_cents": 1, **spec}
    body: dict[str, Any] = {
        "id": "j1", "buyer_id": "b1", "title": spec["title"], "state": "open", "spec": spec,
        "rounds_total": 1, "current_round": 0, "accepted_providers": [], "param_count": None,
        "fingerprint": None, "budget_cents": 100, "funded_cents": 100, "currency": "usd",
        "failure_reason": None, "has_final_model": False, "rounds": [], "created_at": NOW,
        "updated_at": NOW,
    }  # fmt: skip
    return JobPublic.model_validate({**body, **over})


def matching_view(**over: Any) -> MatchingPublic:
    body: dict[str, Any] = {
        "job_id": "j1", "state": "open", "listings": 0, "eligible": 0, "offers": {},
        "min_providers": 2, "excluded": [],
    }  # fmt: skip
    return MatchingPublic.model_validate({**body, **over})
