"""Jobs in the database without HTTP or crypto, for the settlement and property tests: the
services under test are the real ones, only the envelopes are skipped."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from crypto.identity import IdentityKey
from market import translog
from market.config import Settings
from market.db import unit_of_work
from market.models import Account, Job, Offer, Round, Submission
from market.models.types import new_id
from market.services import funding
from market.services.accounts import create_account
from market.services.rounds import start_job
from tests.utils.factories import SCHEMA


@dataclass
class MoneyJob:
    job: Job
    buyer: Account
    admin: Account
    providers: list[str]


def _account(session: Session, role: str, name: str) -> Account:
    created = create_account(session, role=role, name=name)
    account = session.get(Account, created.id)
    assert account is not None
    return account


def running_job(
    session: Session,
    *,
    now: datetime,
    providers: int = 3,
    rounds: int = 3,
    budget: int = 10_000,
    fee_bps: int = 500,
    funded: int | None = None,
    samples: list[int] | None = None,
) -> MoneyJob:
    """A funded job in `running` with every provider accepted and round 1 collecting.

    Installs a server signing key and blob store first, as a server process does at start:
    settling a round signs a record, so a test of the services alone needs them too."""
    translog.install(
        Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="pollen-money-")),
            signing_key=IdentityKey.generate().seed_hex(),
        )
    )
    buyer = _account(session, "buyer", "buyer")
    admin = _account(session, "admin", "admin")
    pids = [_account(session, "provider", f"p{i}").id for i in range(providers)]
    job = Job(
        id=new_id("job"), buyer_id=buyer.id, title="t", state="funding",
        spec={"schema": SCHEMA},
        preset_id="p", rounds_total=rounds, quorum=2, min_providers=2,
        max_providers=max(providers, 2), min_samples=1, sample_cap=5000, min_reputation=0.0,
        budget_cents=budget, currency="usd", price_cap_cents=0, round_deadline_s=60,
        offer_ttl_s=60, fee_bps=fee_bps, model_key="m", created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(job)
    session.commit()
    funding.credit(session, admin, job, funded or budget, reference=None, now=now)
    for i, pid in enumerate(pids):
        session.add(
            Offer(
                id=new_id("off"), job_id=job.id, listing_id=_listing(session, pid),
                provider_id=pid, state="accepted", price_cents=0, currency="usd",
                samples=(samples or [100] * providers)[i], value=1.0, rounds_committed=rounds,
                expires_at=now + timedelta(hours=1),
            )
        )  # fmt: skip
    session.commit()
    with unit_of_work(session):
        start_job(session, job, now=now)
    return MoneyJob(job, buyer, admin, pids)


def _listing(session: Session, provider_id: str) -> str:
    from market.models import Listing

    listing = Listing(
        id=new_id("lst"), provider_id=provider_id, name="l", dataset_schema=SCHEMA, samples=100,
        ask_cents=0, currency="usd", capacity=5, state="withdrawn",
    )  # fmt: skip
    session.add(listing)
    session.flush()
    return listing.id


def submit(session: Session, rnd: Round, provider_id: str, samples: int, now: datetime) -> None:
    """What `submissions.submit` records for an accepted envelope, minus the ciphertext,
    with the provider listed in `acc_providers` as the sum a close merges would list it."""
    session.add(
        Submission(
            id=new_id("sub"), job_id=rnd.job_id, round_id=rnd.id, round_number=rnd.number,
            attempt=rnd.attempt, provider_id=provider_id, payload_sha256="0" * 64,
            envelope_key=None, size_bytes=1, samples=samples, weight=1.0, accepted_at=now,
        )
    )  # fmt: skip
    rnd.acc_count += 1
    rnd.acc_providers = [*rnd.acc_providers, provider_id]
    session.add(rnd)
    session.commit()
