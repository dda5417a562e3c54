"""Providers' privacy reports: the ε each has spent on a job, for the buyer and dashboard.

A provider may report only for a job it is an accepted provider of, and only for a round it
submitted to; a later report replaces an earlier one, an older one changes nothing. The buyer
(and an admin) sees every provider's figure, a provider only its own.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, col, select

from market.db import unit_of_work
from market.errors import InvalidInputError, PermissionDeniedError
from market.models import (
    Account,
    PrivacyReport,
    PrivacyReportCreate,
    PrivacyReportPublic,
    Submission,
)
from market.services import access

log = logging.getLogger(__name__)


def public(report: PrivacyReport) -> PrivacyReportPublic:
    return PrivacyReportPublic(
        job_id=report.job_id,
        provider_id=report.provider_id,
        round=report.round,
        epsilon=report.epsilon,
        delta=report.delta,
        reported_at=report.reported_at,
    )


def report(
    session: Session, job_id: str, provider: Account, body: PrivacyReportCreate, *, now: datetime
) -> PrivacyReport:
    """Record the provider's ε after ``body.round`` (an entry point: commits)."""
    job = access.participant_job(session, job_id, provider)
    if provider.role != "provider":
        raise PermissionDeniedError("only the job's providers report privacy spending")
    submitted = session.exec(
        select(Submission.id).where(
            Submission.job_id == job.id,
            Submission.provider_id == provider.id,
            Submission.round_number == body.round,
        )
    ).first()
    if submitted is None:
        raise InvalidInputError(f"you have no submission in round {body.round} of this job")
    with unit_of_work(session):
        row = session.get(PrivacyReport, (job.id, provider.id))
        if row is None:
            row = PrivacyReport(
                job_id=job.id,
                provider_id=provider.id,
                round=body.round,
                epsilon=body.epsilon,
                delta=body.delta,
                reported_at=now,
            )
            session.add(row)
        elif body.round >= row.round:
            row.round, row.epsilon, row.delta, row.reported_at = (
                body.round,
                body.epsilon,
                body.delta,
                now,
            )
            session.add(row)
    log.info("provider %s spent ε=%.3f on job %s", provider.id, row.epsilon, job.id)
    return row


def reports_for(session: Session, job_id: str, viewer: Account) -> list[PrivacyReport]:
    """The job's reports the viewer may see (404 if it may not see the job)."""
    job = access.visible_job(session, job_id, viewer)
    query = select(PrivacyReport).where(PrivacyReport.job_id == job.id)
    if viewer.role == "provider":
        query = query.where(PrivacyReport.provider_id == viewer.id)
    return list(session.exec(query.order_by(col(PrivacyReport.provider_id))).all())
