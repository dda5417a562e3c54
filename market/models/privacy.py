"""The ε each provider reports having spent on a job (record-level DP, see agents.privacy).

Only the privacy figures travel: the round they cover, ε and δ. One row per provider and
job, holding its latest report (ε is cumulative, so the latest round says it all).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from dataspec.views import PrivacyReportPublic
from market.models.schema import Strict
from market.models.types import UTCDateTime, utcnow

__all__ = ["PrivacyReport", "PrivacyReportCreate", "PrivacyReportPublic"]


class PrivacyReport(SQLModel, table=True):
    __tablename__ = "privacy_report"

    job_id: str = SQLField(foreign_key="job.id", primary_key=True, max_length=32)
    provider_id: str = SQLField(foreign_key="account.id", primary_key=True, max_length=32)
    round: int
    epsilon: float
    delta: float
    reported_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class PrivacyReportCreate(Strict):
    round: Annotated[int, Field(ge=1, le=1000)]
    epsilon: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
