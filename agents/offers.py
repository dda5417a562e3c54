"""Which offers a provider agent takes, and why it declines the others.

An offer is declined, and the agent says why, when its price is under the agent's minimum
or the agent already works as many jobs as its `AgentPolicy` allows; when the local data,
as it is now, cannot train the job (`unfit_reason`); or when the job's privacy requirement
is one the provider's `PrivacyPolicy` refuses. An offer the server holds as accepted that
the agent's state file does not know (an earlier life's answer was lost) is taken up again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.data import DataError, Dataset, prepare
from agents.models import build_model
from agents.privacy import PrivacyDeclinedError, PrivacyPolicy
from agents.sealing import job_privacy
from agents.table_schema import listing_schema
from agents.tabular import Table
from dataspec.jobs import JobCreate
from dataspec.states import OfferState

if TYPE_CHECKING:
    from agents.client import PollenClient
    from agents.state import StateFile
    from dataspec.views import OfferPublic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentPolicy:
    """When the agent says yes to an offer."""

    min_price_cents: int = 0
    max_concurrent_jobs: int = 1


def unfit_reason(data: Dataset | Table, label: str, spec: JobCreate) -> str | None:
    """Why `data` (its label column `label`) cannot train the job `spec` describes (None:
    it can).

    Checked before accepting, against the data as it is now (not as the listing said when
    it was published), so a changed file is declined up front instead of crashing in every
    round."""
    from dataspec import incompatibility

    try:
        schema = spec.dataset_schema
        table = Table.from_dataset(data) if isinstance(data, Dataset) else data
        reason = incompatibility(schema, listing_schema(table, label))
        if reason is not None:
            return f"the local data does not fit the job's schema: {reason}"
        prepared = prepare(data, schema)
        build_model(spec.model, schema.n_features, schema.n_classes, seed=0)
    except (DataError, ValueError, KeyError) as exc:
        return f"cannot apply the job's preprocessing: {exc}"
    if len(prepared) == 0:
        return "no rows"
    return None


def answer_offers(
    client: PollenClient,
    state: StateFile,
    *,
    policy: AgentPolicy,
    privacy: PrivacyPolicy,
    unfit: Callable[[JobCreate], str | None],
    notify: Callable[[str], None],
) -> None:
    """Accept or decline every pending offer; jobs taken go into the state file's "jobs"."""
    jobs = state.section("jobs")
    for offer in client.list_offers():
        if offer.state == OfferState.ACCEPTED and offer.job_id not in jobs:
            # Accepted by an earlier life whose answer never arrived (crash, lost
            # response): the server counts on us, so take the job up.
            _take_up(state, jobs, offer)
            notify(f"resuming job {offer.job_id} (offer accepted earlier)")
            continue
        if offer.state != OfferState.PENDING:
            continue
        if _declined(
            client, offer, jobs, policy=policy, privacy=privacy, unfit=unfit, notify=notify
        ):
            continue
        client.accept_offer(offer.id)
        _take_up(state, jobs, offer)
        notify(f"accepted offer for job {offer.job_id} at {offer.price_cents} cents/round")


def _take_up(state: StateFile, jobs: dict[str, Any], offer: OfferPublic) -> None:
    jobs[offer.job_id] = {"offer_id": offer.id, "submitted": {}, "done": False}
    state.save()


def _declined(
    client: PollenClient,
    offer: OfferPublic,
    jobs: dict[str, Any],
    *,
    policy: AgentPolicy,
    privacy: PrivacyPolicy,
    unfit: Callable[[JobCreate], str | None],
    notify: Callable[[str], None],
) -> bool:
    """Decline `offer` if the agent is not to take it, saying why; True if it was."""
    busy = sum(1 for j in jobs.values() if not j.get("done"))
    price = offer.price_cents
    if price < policy.min_price_cents or busy >= policy.max_concurrent_jobs:
        client.decline_offer(offer.id)
        notify(f"declined offer {offer.id} (price {price}, busy {busy})")
        return True
    job_spec = client.get_job(offer.job_id).spec
    reason = unfit(job_spec)
    if reason is not None:
        client.decline_offer(offer.id)
        logger.warning("declined offer %s: %s", offer.id, reason)
        notify(f"declined offer {offer.id} for job {offer.job_id}: {reason}")
        return True
    try:
        privacy.target_for(job_privacy(job_spec))
    except PrivacyDeclinedError as exc:
        client.decline_offer(offer.id)
        notify(f"declined offer {offer.id}: {exc}")
        return True
    return False
