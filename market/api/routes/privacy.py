"""Privacy reports: each provider's ε spent on a job, reported after every round."""

from __future__ import annotations

from fastapi import APIRouter

from market.api.deps import CurrentAccount, NowDep, ProviderAccount, SessionDep
from market.models import PrivacyReportCreate, PrivacyReportPublic
from market.services import privacy

router = APIRouter(prefix="/v1/jobs/{job_id}/privacy", tags=["privacy"])


@router.post("", response_model=PrivacyReportPublic)
def report(
    job_id: str,
    body: PrivacyReportCreate,
    account: ProviderAccount,
    session: SessionDep,
    now: NowDep,
) -> PrivacyReportPublic:
    return privacy.public(privacy.report(session, job_id, account, body, now=now))


@router.get("", response_model=list[PrivacyReportPublic])
def list_(job_id: str, account: CurrentAccount, session: SessionDep) -> list[PrivacyReportPublic]:
    return [privacy.public(r) for r in privacy.reports_for(session, job_id, account)]
