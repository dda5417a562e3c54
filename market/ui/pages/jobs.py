"""The marketplace and a job's page: rounds, metrics, money, contributions, the final model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from market.blobs import BlobStore, BlobStream
from market.ledger import queries
from market.lifecycle import JOB_ENDED
from market.models import Account, Job, JobPublic, Receipt, Round
from market.services import access, groups, privacy, receipts, reputation, results, views
from market.services import jobs as job_service
from market.ui.charts import Point, Series
from market.ui.pages.common import JobRow, Named, job_row, named, names_of, require


@dataclass(frozen=True)
class ProviderRank:
    rank: int
    provider: Named
    score: float
    events: int
    latest_reason: str | None
    latest_at: datetime | None


@dataclass(frozen=True)
class MarketplacePage:
    open_jobs: list[JobRow]
    finished_jobs: list[JobRow]
    providers: list[ProviderRank]


@dataclass(frozen=True)
class RoundLine:
    number: int
    state: str
    attempt: int
    opened_at: datetime
    closed_at: datetime | None
    deadline: datetime
    submitted: int
    expected: int
    included: list[Named]
    close_reason: str | None
    accuracy: float | None
    loss: float | None
    # A regression job's measures, in the target's units (R² unitless).
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None


@dataclass(frozen=True)
class JobPage:
    job: JobPublic
    buyer: Named
    sees_all: bool
    providers: list[Named]
    rounds: list[RoundLine]
    accuracy: Series
    loss: Series
    # The buyer's and admins' view of the money; None for a provider.
    receipt: Receipt | None
    names: dict[str, str]
    # A provider's own earnings on this job (earned, paid, owed), else None.
    own_earnings: dict[str, Any] | None
    # ε each provider reports having spent (all of them for the buyer/admin, else its own).
    privacy: list[PrivacyLine] = field(default_factory=list)
    # Each provider's contribution score (market.services.groups) beside what it earned:
    # every provider for the buyer and admins, a provider its own line.
    contributions: list[ContributionLine] = field(default_factory=list)
    # "classification" (accuracy charted) or "regression" (RMSE and MAE, R² charted).
    task: str = "classification"
    errors: list[Series] = field(default_factory=list)
    r2: Series = field(default_factory=lambda: Series("R²", []))
    # Where the buyer (or an admin) downloads the final model; None for anyone else.
    final_model_url: str | None = None


@dataclass(frozen=True)
class ContributionLine:
    provider: Named
    score: float
    earned_cents: int


@dataclass(frozen=True)
class PrivacyLine:
    provider: Named
    epsilon: float
    delta: float
    round: int


def provider_ranking(
    session: Session, viewer: Account | None, *, now: datetime
) -> list[ProviderRank]:
    """Every provider by reputation, best first (what `GET /v1/reputation` shows)."""
    reps = [
        reputation.public(session, p, now=now, viewer=viewer, limit=1)
        for p in reputation.providers(session)
    ]
    reps.sort(key=lambda r: (-r.score, r.name, r.provider_id))
    return [
        ProviderRank(
            rank=i,
            provider=Named(r.provider_id, r.name),
            score=r.score,
            events=r.events,
            latest_reason=r.history[0].reason if r.history else None,
            latest_at=r.history[0].at if r.history else None,
        )
        for i, r in enumerate(reps, start=1)
    ]


def marketplace(session: Session, viewer: Account | None, *, now: datetime) -> MarketplacePage:
    """Providers ranked by reputation for everyone; jobs only as far as the viewer sees them
    (the API lists jobs to their buyer, their providers and admins, never anonymously)."""
    rows = (
        [job_row(session, j) for j in job_service.list_jobs(session, viewer)]
        if viewer is not None
        else []
    )
    rows.reverse()  # newest first
    return MarketplacePage(
        open_jobs=[r for r in rows if r.state not in JOB_ENDED],
        finished_jobs=[r for r in rows if r.state in JOB_ENDED],
        providers=provider_ranking(session, viewer, now=now),
    )


def _metric(metrics: dict[str, float] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return None if value is None else float(value)


def job_page(session: Session, job_id: str, viewer: Account | None) -> JobPage:
    """A job's status, rounds and metrics; money in full for its buyer and admins only."""
    account = require(viewer)
    job = access.visible_job(session, job_id, account)
    view = views.job_public(session, job, account)
    sees_all = access.sees_job_in_full(account, job)
    ids = {job.buyer_id, *view.accepted_providers}
    for summary in view.rounds:
        ids.update(summary.included)
    rec = receipts.receipt(session, job) if sees_all else None
    if rec is not None:
        ids.update(p["provider_id"] for p in rec.providers)
    names = names_of(session, ids)
    lines = _round_lines(session, job, view, names)
    task = str(job.spec.get("task", "classification"))
    accuracy = _series(lines, "accuracy", "accuracy", "{:.4f}")
    loss = _series(lines, "loss", "loss", "{:.4f}")
    errors = [_series(lines, "rmse", "RMSE", "{:.4g}"), _series(lines, "mae", "MAE", "{:.4g}")]
    r2 = _series(lines, "r2", "R²", "{:.4f}")
    spent = privacy.reports_for(session, job.id, account)
    names.update(names_of(session, {r.provider_id for r in spent} - set(names)))
    privacy_lines = [
        PrivacyLine(Named(r.provider_id, names.get(r.provider_id, r.provider_id)), r.epsilon,
                    r.delta, r.round)
        for r in spent
    ]  # fmt: skip
    own = _own_earnings(session, job, account)
    contributions = _contributions(session, job, account, sees_all, rec, own, names)
    download = None
    if sees_all and job.final_model_key is not None:
        download = f"/ui/jobs/{job.id}/model"
    return JobPage(
        job=view, buyer=Named(job.buyer_id, names.get(job.buyer_id, job.buyer_id)),
        sees_all=sees_all, providers=named(view.accepted_providers, names), rounds=lines,
        accuracy=accuracy, loss=loss, receipt=rec, names=names, own_earnings=own,
        privacy=privacy_lines, contributions=contributions, task=task, errors=errors, r2=r2,
        final_model_url=download,
    )  # fmt: skip


def _round_lines(
    session: Session, job: Job, view: JobPublic, names: dict[str, str]
) -> list[RoundLine]:
    """Each round the viewer's job view lists, with the times and reasons its row holds."""
    rows = {r.number: r for r in session.exec(select(Round).where(Round.job_id == job.id)).all()}
    lines = []
    for s in view.rounds:
        row = rows[s.round]
        lines.append(
            RoundLine(
                number=s.round, state=s.state, attempt=s.attempt, opened_at=row.opened_at,
                closed_at=row.closed_at, deadline=s.deadline, submitted=s.submitted,
                expected=len(row.expected), included=named(s.included, names),
                close_reason=row.close_reason, accuracy=_metric(s.metrics, "accuracy"),
                loss=_metric(s.metrics, "loss"), rmse=_metric(s.metrics, "rmse"),
                mae=_metric(s.metrics, "mae"), r2=_metric(s.metrics, "r2"),
            )
        )  # fmt: skip
    return lines


def _own_earnings(session: Session, job: Job, account: Account) -> dict[str, Any] | None:
    """A provider's earned, paid and owed on this job; None for anyone else."""
    own = None
    if account.role == "provider":
        for e in queries.provider_earnings(session, account.id):
            for j in e.jobs:
                if j["job_id"] == job.id:
                    own = {**j, "currency": e.currency}
    return own


def _contributions(
    session: Session,
    job: Job,
    account: Account,
    sees_all: bool,
    rec: Receipt | None,
    own: dict[str, Any] | None,
    names: dict[str, str],
) -> list[ContributionLine]:
    """Contribution scores, best first, beside what each provider earned: every provider for
    the buyer and admins, a provider its own line."""
    earned = {str(p["provider_id"]): int(p["earned_cents"]) for p in (rec.providers if rec else [])}
    if own is not None:
        earned[account.id] = int(own["earned_cents"])
    scores = groups.scores(session, job)
    return [
        ContributionLine(Named(pid, names.get(pid, pid)), score, earned.get(pid, 0))
        for pid, score in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if sees_all or pid == account.id
    ]


def _series(lines: Sequence[RoundLine], attr: str, name: str, fmt: str) -> Series:
    """One measure per round that has it, each point labelled 'Round 3: RMSE 54.2'."""
    points = []
    for line in lines:
        value = getattr(line, attr)
        if value is not None:
            label = f"Round {line.number}: {name} {fmt.format(value)}"
            points.append(Point(line.number, value, label))
    return Series(name, points)


def final_model(
    session: Session, blobs: BlobStore, job_id: str, viewer: Account | None
) -> BlobStream:
    """The job's final model file, for its buyer and admins (providers held every round's
    model already, but the page offers the result to the party who paid for it)."""
    account = require(viewer)
    refusal = "the final model is downloaded by the job's buyer"
    job = access.buyer_or_admin_job(session, job_id, account, refusal)
    return results.open_final_model(blobs, job)
