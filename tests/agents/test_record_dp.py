"""Record-level DP (DP-SGD) policy: what an agent accepts, the noise it plans, the budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agents.experiment import load_digits_split
from agents.privacy import (
    PrivacyDeclinedError,
    PrivacyPolicy,
    PrivacyTarget,
    plan_record_dp,
)
from agents.provider import ProviderAgent
from dataspec.views import JobPublic, OfferPublic
from market.models.jobs import PrivacySpec
from tests.utils.views import job_view, offer_view


def test_policy_accepts_stricter_jobs_and_declines_weaker_ones() -> None:
    """A default agent trains at its own ε = 8, at a job's smaller ε, and declines a larger ε
    or a job asking for no DP; an agent that opted out follows the job."""
    policy = PrivacyPolicy()
    assert policy.target_for(None) == PrivacyTarget(8.0, 1e-5, 1.0)
    assert policy.target_for({"epsilon": 2, "delta": 1e-6, "clip": 0.5}) == PrivacyTarget(
        2.0, 1e-6, 0.5
    )
    with pytest.raises(PrivacyDeclinedError, match="at most 8"):
        policy.target_for({"epsilon": 20, "delta": 1e-5, "clip": 1})
    with pytest.raises(PrivacyDeclinedError, match="requires"):
        policy.target_for("off")
    opted_out = PrivacyPolicy(max_epsilon=None)
    assert opted_out.target_for(None) is None and opted_out.target_for("off") is None
    assert opted_out.target_for({"epsilon": 20, "delta": 1e-5, "clip": 1}).epsilon == 20


@pytest.mark.parametrize(
    "bad", [{"epsilon": 0}, {"epsilon": math.inf}, {"epsilon": 1, "delta": 1}, {"epsilon": 1,
            "clip": 0}, {"epsilon": 1, "delta": 0}],
)  # fmt: skip
def test_job_spec_privacy_is_validated(bad: dict[str, Any]) -> None:
    """The job spec refuses ε ≤ 0 or infinite, δ outside (0, 1), clip ≤ 0."""
    with pytest.raises(ValueError):
        PrivacySpec.model_validate(bad)


def test_plan_spends_exactly_the_budget_over_the_job() -> None:
    """The planned σ makes the job's last round land at (not past) the target ε, and the
    plan refuses a round beyond the job's (e.g. a retried round)."""
    plan = plan_record_dp(
        PrivacyTarget(8.0, 1e-5, 1.0), samples=360, batch_size=16, epochs=5, rounds=10
    )
    total = plan.steps_per_round * 10
    assert 7.9 < plan.epsilon_after(total) <= 8.0
    assert plan.allows(plan.steps_per_round * 9) and not plan.allows(total)


class _Offers:
    def __init__(self, privacy: Any) -> None:
        self.privacy = privacy
        self.declined: list[str] = []
        self.accepted: list[str] = []

    def list_offers(self) -> list[OfferPublic]:
        return [offer_view()]

    def get_job(self, job_id: str) -> JobPublic:
        schema = load_digits_split(2, seed=0).schema.model_dump(exclude_none=True)
        spec = {"privacy": self.privacy, "schema": schema, "model": {"arch": "logreg"}}
        return job_view(spec, id=job_id)

    def decline_offer(self, offer_id: str) -> None:
        self.declined.append(offer_id)

    def accept_offer(self, offer_id: str) -> None:
        self.accepted.append(offer_id)


@pytest.mark.parametrize(
    ("privacy", "accepted"),
    [(None, True), ({"epsilon": 4, "delta": 1e-5, "clip": 1}, True),
     ({"epsilon": 50, "delta": 1e-5, "clip": 1}, False), ("off", False)],
)  # fmt: skip
def test_agent_declines_offers_its_privacy_policy_refuses(
    tmp_path: Path, privacy: Any, accepted: bool
) -> None:
    """A default agent accepts jobs it can train at ε ≤ 8 and declines the others."""
    client = _Offers(privacy)
    data = load_digits_split(2, seed=0).providers[0]
    agent = ProviderAgent(client, data, state_dir=tmp_path, listing_name="p", ask_cents=1,  # type: ignore[arg-type]
                          notify=lambda m: None)  # fmt: skip
    agent.handle_offers()
    assert (client.accepted, client.declined) == ((["o1"], []) if accepted else ([], ["o1"]))
