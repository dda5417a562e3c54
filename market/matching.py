"""Matching of open jobs to dataset listings, as a pure function over plain data.

Eligibility of a listing for a job (all must hold):

- the provider is verified (its Stripe Connect account can receive payouts, or an operator
  approved it), unless the job's demand says verification is not required: only verified
  providers are ever offered a job, so every quorum counts real parties
  (`market.services.verification`);
- compatible schema (`dataspec.incompatibility`, the rule agents apply too): the listing has
  exactly the job's columns, each of a kind the job's feature accepts, missing values only
  where the job declares a fill, the same label, and only classes the job knows (or, for a
  regression, a numeric target);
- provider reputation ≥ the job's `min_reputation`;
- ask per round ≤ the job's `price_cap_cents`, in the job's currency;
- samples ≥ the job's `min_samples`;
- free capacity (the listing serves fewer live offers than its capacity);
- the provider has never had an offer for this job.

Value of an eligible listing to a job: `min(samples, sample_cap) x reputation`, the number of
useful samples discounted by how likely the provider delivers them. For each job, in the order
given (oldest first), candidates are taken by value descending (then lower ask, then input
order), one listing per provider, while `ask x rounds` fits in the job's remaining budget,
until the job's free provider slots are filled. This greedy choice is an approximation of the
budgeted maximum; it is deterministic and fast (10,000 listings x 100 jobs in well under 1 s,
see `python -m bench matching`). Capacity used by one job is not available to the next.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import ValidationError

from dataspec import DatasetSchema, JobDatasetSchema, incompatibility


@dataclass(frozen=True, eq=False)
class SchemaShape:
    """A dataset schema as stored (a JSON mapping), with a stable `key` for grouping."""

    schema: Mapping[str, Any]
    key: str = field(default="")

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> SchemaShape:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        return cls(schema=schema, key=hashlib.sha256(canonical.encode()).hexdigest())

    @cached_property
    def as_job(self) -> JobDatasetSchema | None:
        try:
            return JobDatasetSchema.model_validate(self.schema)
        except ValidationError:
            return None

    @cached_property
    def as_listing(self) -> DatasetSchema | None:
        try:
            return DatasetSchema.model_validate(self.schema)
        except ValidationError:
            return None


def why_incompatible(required: SchemaShape, offered: SchemaShape) -> str | None:
    """Why data with the `offered` (listing) schema cannot train the `required` (job) one."""
    job, listing = required.as_job, offered.as_listing
    if job is None:
        return "the job's schema is not valid"
    if listing is None:
        return "the listing's schema is not valid"
    return incompatibility(job, listing)


def compatible(required: SchemaShape, offered: SchemaShape) -> bool:
    """Can data with the `offered` schema train a model built for the `required` one?"""
    return why_incompatible(required, offered) is None


@dataclass(frozen=True, slots=True)
class Supply:
    listing_id: str
    provider_id: str
    schema: SchemaShape
    samples: int
    ask_cents: int
    currency: str
    free_capacity: int
    reputation: float
    verified: bool


@dataclass(frozen=True, slots=True)
class Demand:
    job_id: str
    schema: SchemaShape
    min_samples: int
    sample_cap: int
    min_reputation: float
    price_cap_cents: int
    currency: str
    rounds: int
    slots: int
    budget_left_cents: int
    excluded_providers: frozenset[str] = frozenset()
    require_verified: bool = True


@dataclass(frozen=True, slots=True)
class Proposal:
    job_id: str
    listing_id: str
    provider_id: str
    price_cents: int
    samples: int
    value: float
    rounds: int


def match(demands: Sequence[Demand], supplies: Sequence[Supply]) -> list[Proposal]:
    """Proposals (future offers) for every demand, respecting capacity across demands."""
    if not demands or not supplies:
        return []
    group_of: dict[str, int] = {}
    shapes: list[SchemaShape] = []
    group = np.empty(len(supplies), dtype=np.int64)
    currencies: dict[str, int] = {}
    currency = np.empty(len(supplies), dtype=np.int64)
    for i, s in enumerate(supplies):
        g = group_of.setdefault(s.schema.key, len(shapes))
        if g == len(shapes):
            shapes.append(s.schema)
        group[i] = g
        currency[i] = currencies.setdefault(s.currency, len(currencies))
    samples = np.fromiter((s.samples for s in supplies), np.int64, len(supplies))
    ask = np.fromiter((s.ask_cents for s in supplies), np.int64, len(supplies))
    rep = np.fromiter((s.reputation for s in supplies), np.float64, len(supplies))
    free = np.fromiter((s.free_capacity for s in supplies), np.int64, len(supplies))
    verified = np.fromiter((s.verified for s in supplies), bool, len(supplies))

    proposals: list[Proposal] = []
    compat_cache: dict[str, np.ndarray] = {}
    for job in demands:
        if job.slots <= 0 or job.currency not in currencies:
            continue
        compat = compat_cache.get(job.schema.key)
        if compat is None:
            compat = np.fromiter((compatible(job.schema, sh) for sh in shapes), bool, len(shapes))
            compat_cache[job.schema.key] = compat
        mask = (
            (verified | (not job.require_verified))
            & compat[group]
            & (currency == currencies[job.currency])
            & (rep >= job.min_reputation)
            & (ask <= job.price_cap_cents)
            & (samples >= job.min_samples)
            & (free > 0)
        )
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        value = np.minimum(samples[idx], job.sample_cap) * rep[idx]
        # lexsort: the last key is the primary one; the sort is stable, so ties keep input order.
        order = idx[np.lexsort((ask[idx], -value))]
        proposals.extend(_take(job, order, supplies, samples, ask, rep, free))
    return proposals


def _take(
    job: Demand,
    order: np.ndarray,
    supplies: Sequence[Supply],
    samples: np.ndarray,
    ask: np.ndarray,
    rep: np.ndarray,
    free: np.ndarray,
) -> list[Proposal]:
    taken: list[Proposal] = []
    seen = set(job.excluded_providers)
    budget = job.budget_left_cents
    for i in order.tolist():
        s = supplies[i]
        if s.provider_id in seen:
            continue
        cost = int(ask[i]) * job.rounds
        if cost > budget:
            continue
        seen.add(s.provider_id)
        budget -= cost
        free[i] -= 1
        capped = min(int(samples[i]), job.sample_cap)
        taken.append(
            Proposal(
                job_id=job.job_id,
                listing_id=s.listing_id,
                provider_id=s.provider_id,
                price_cents=int(ask[i]),
                samples=capped,
                value=capped * float(rep[i]),
                rounds=job.rounds,
            )
        )
        if len(taken) >= job.slots:
            break
    return taken


@dataclass(frozen=True)
class Explanation:
    """Why listings are or are not offered a job: counts, never listing identities."""

    listings: int
    eligible: int
    excluded: dict[str, int]


def _public_reason(reason: str) -> str:
    # What a buyer may read: reasons about the job's own columns keep their names; anything
    # naming the listing's side (its other columns, label or classes) is generalised.
    if reason.startswith("extra column"):
        return "the listing has columns the job does not"
    if reason.startswith("label column is"):
        return "the listing has another label column"
    if reason.startswith("label class"):
        return "the listing has label classes the job does not know"
    return reason


def explain(job: Demand, supplies: Sequence[Supply]) -> Explanation:
    """For one job, how many listings could be offered it and, for the rest, the first rule
    (in the order of the module docstring) that leaves each out, counted by reason."""
    excluded: dict[str, int] = {}
    eligible = 0
    budget_left = job.budget_left_cents
    for s in supplies:
        reason = why_incompatible(job.schema, s.schema)
        if job.require_verified and not s.verified:
            reason = "provider not verified (by Stripe Connect or an operator)"
        elif reason is not None:
            reason = "schema: " + _public_reason(reason)
        elif s.currency != job.currency:
            reason = f"asks in {s.currency}, the job pays in {job.currency}"
        elif s.reputation < job.min_reputation:
            reason = f"reputation below the job's minimum {job.min_reputation:g}"
        elif s.ask_cents > job.price_cap_cents:
            reason = f"asks more than the price cap of {job.price_cap_cents} cents a round"
        elif s.samples < job.min_samples:
            reason = f"fewer samples than the job's minimum {job.min_samples}"
        elif s.free_capacity <= 0:
            reason = "busy with other jobs (no free capacity)"
        elif s.provider_id in job.excluded_providers:
            reason = "already had an offer for this job"
        elif s.ask_cents * job.rounds > budget_left:
            reason = f"its ask × {job.rounds} rounds exceeds the budget left ({budget_left} cents)"
        if reason is None:
            eligible += 1
        else:
            excluded[reason] = excluded.get(reason, 0) + 1
    return Explanation(listings=len(supplies), eligible=eligible, excluded=excluded)
