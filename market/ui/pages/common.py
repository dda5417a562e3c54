"""Names, rows and checks the pages share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from market.errors import AuthenticationError, NotFoundError
from market.lifecycle import ROUND_HAS_AGGREGATE
from market.models import Account, Job, Round
from market.services.rounds import participants


@dataclass(frozen=True)
class Named:
    """An account id with its display name, for links."""

    id: str
    name: str


@dataclass(frozen=True)
class JobRow:
    id: str
    title: str
    state: str
    arch: str
    rounds_done: int
    rounds_total: int
    providers: int
    max_providers: int
    budget_cents: int
    currency: str


def require(viewer: Account | None) -> Account:
    """The viewer, or AuthenticationError for a page that needs a session."""
    if viewer is None:
        raise AuthenticationError("sign in to see this page")
    return viewer


def names_of(session: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.exec(select(Account).where(col(Account.id).in_(wanted))).all()
    return {a.id: a.name for a in rows}


def named(ids: Iterable[str], names: dict[str, str]) -> list[Named]:
    return [Named(i, names.get(i, i)) for i in ids]


def job_row(session: Session, job: Job) -> JobRow:
    accepted = len(participants(session, job.id))
    done = sum(
        1
        for r in session.exec(select(Round).where(Round.job_id == job.id)).all()
        if r.state in ROUND_HAS_AGGREGATE
    )
    return JobRow(
        id=job.id, title=job.title, state=job.state, arch=str(job.spec["model"]["arch"]),
        rounds_done=done, rounds_total=job.rounds_total, providers=accepted,
        max_providers=job.max_providers, budget_cents=job.budget_cents, currency=job.currency,
    )  # fmt: skip


def provider_account(session: Session, provider_id: str) -> Account:
    account = session.get(Account, provider_id)
    if account is None or account.role != "provider":
        raise NotFoundError(f"no provider {provider_id}")
    return account
