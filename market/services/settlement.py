"""Settlement: the ledger postings of funding, of each closed round, and of a job's end.

Per round (in `close_round`, in the same database transaction):

- fee   = budget × fee_bps // 10 000 (the job's `fee_bps`, `POLLEN_PLATFORM_FEE_BPS` when it was
  funded); each round takes fee // rounds, the last round the remainder;
- pool  = (budget − fee) // rounds, the last round the remainder, so all rounds together
  spend exactly the budget;
- the pool is split among the round's included providers (those whose update is in the
  aggregate; late and invalid providers have none and get nothing) by **measured
  contribution**: each provider's score φ from the buyer's evaluations of the random groups
  it was in, in earlier rounds (`market.services.groups`). A provider with no score yet gets
  exactly the equal share pool / n; the providers with a score share the rest in proportion
  to max(φ − floor, 0), the floor a quarter of the mean positive score (equally if none is
  above it). No claim moves money: neither the samples a
  provider declares nor its reputation (which gates matching only). **Largest-remainder
  rounding** (ties by provider id) makes the shares add up to the pool to the cent;
- postings: escrow −(pool + fee), each provider's payable +share, platform fees +fee;
  idempotency key `round:<round id>:settle`;
- the server signs a `settlement` record of the same money (each payee's cents, the fee, the
  ledger transaction's leaf) into the transparency log, so a party's audit can hold the
  ledger to what was signed (`market.services.trust.log_settlement`).

At the end of a job (completed, cancelled or failed) whatever is still in escrow goes to the
buyer's refunds account, and a refund is queued on the payment rail (a Stripe Refund, or a
line for the operator on the manual rail); a cancellation fee and the refund get their signed
`settlement` records too (round None).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlmodel import Session, col, select

from market import ledger
from market.ledger.journal import find
from market.lifecycle import JOB_ENDED, JobState, PaymentStatus
from market.models import Job, LedgerTransaction, Payment, Round, Submission
from market.models.types import new_id
from market.services import groups, reputation, trust
from market.translog import current

log = logging.getLogger(__name__)


def fee_total(job: Job) -> int:
    return job.budget_cents * job.fee_bps // 10_000


def _nth_share(total: int, n: int, number: int) -> int:
    """Round `number`'s part of `total` over `n` rounds; the last round takes the remainder."""
    per = total // n
    return total - per * (n - 1) if number >= n else per


def round_amounts(job: Job, number: int) -> tuple[int, int]:
    """(provider pool, platform fee) of round `number`."""
    fee = fee_total(job)
    return (
        _nth_share(job.budget_cents - fee, job.rounds_total, number),
        _nth_share(fee, job.rounds_total, number),
    )


def split(pool: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Largest-remainder split of `pool` cents in proportion to integer `weights`.

    Every share is ⌊pool·w/W⌋ plus one cent for the largest remainders (ties: provider id),
    so the shares sum to `pool` exactly. Zero total weight splits evenly.
    """
    if not weights:
        return {}
    if pool < 0 or any(w < 0 for w in weights.values()):
        raise ValueError("pool and weights must not be negative")
    total = sum(weights.values())
    if total == 0:
        weights, total = dict.fromkeys(weights, 1), len(weights)
    shares = {pid: pool * w // total for pid, w in weights.items()}
    left = pool - sum(shares.values())
    by_remainder = sorted(weights, key=lambda pid: (-(pool * weights[pid] % total), pid))
    for pid in by_remainder[:left]:
        shares[pid] += 1
    return shares


# A score below this fraction of the scored providers' mean positive score earns nothing:
# that close to zero, an estimate from a few random groups cannot tell a small contribution
# from none (a freeloader's first groups credit it with half of its partners' work).
MIN_SHARE_OF_MEAN = 0.25


def contribution_weights(included: Iterable[str], scores: Mapping[str, float]) -> dict[str, int]:
    """Integer split weights: unscored providers weigh the scored ones' mean, so each gets
    exactly pool / n; scored ones weigh max(φ − floor, 0) (in millionths), the floor being
    `MIN_SHARE_OF_MEAN` of the mean positive score."""
    included = sorted(set(included))
    positive = [scores[p] for p in included if p in scores and scores[p] > 0]
    floor = MIN_SHARE_OF_MEAN * sum(positive) / len(positive) if positive else 0.0
    scored = {p: max(0, round(1_000_000 * (scores[p] - floor))) for p in included if p in scores}
    if not scored or sum(scored.values()) == 0:
        return dict.fromkeys(included, 1)
    mean = max(1, round(sum(scored.values()) / len(scored)))
    return {p: scored.get(p, mean) for p in included}


def _paid_providers(session: Session, rnd: Round) -> set[str]:
    """The providers the round's sum lists that have a submission row (the others are logged,
    never paid)."""
    inside = set(rnd.acc_providers)
    subs = session.exec(select(Submission).where(Submission.round_id == rnd.id)).all()
    submitted = {s.provider_id for s in subs if s.provider_id in inside}
    if submitted != inside:
        log.error(
            "round %s: the sum lists %s without a submission row; they are not paid",
            rnd.id, sorted(inside - submitted),
        )  # fmt: skip
    return submitted


def _post_round(
    session: Session,
    job: Job,
    rnd: Round,
    *,
    shares: dict[str, int],
    fee: int,
    weights: Mapping[str, int],
    scores: Mapping[str, float],
    now: datetime,
) -> None:
    """Escrow to the payees and the fee, once per round, and its signed settlement record."""
    legs = [(ledger.provider_payable(pid), x) for pid, x in sorted(shares.items()) if x > 0]
    if fee > 0:
        legs.append((ledger.FEES, fee))
    spent = sum(x for _, x in legs)
    key = f"round:{rnd.id}:settle"
    if spent > 0 and find(session, key) is None:
        txn = ledger.post(
            session,
            key=key,
            kind="settle",
            currency=job.currency,
            legs=[(ledger.job_escrow(job.id), -spent), *legs],
            job_id=job.id,
            memo=f"round {rnd.number} of {job.rounds_total}",
            meta={
                "round": rnd.number,
                "weights": weights,
                "scores": {p: round(scores[p], 6) for p in sorted(weights) if p in scores},
            },
            now=now,
        )
        trust.log_settlement(
            session, current(), job, round=rnd.number, attempt=rnd.attempt, payees=shares,
            fees_cents=fee, refund_cents=0, txns=[txn], now=now,
        )  # fmt: skip


def settle_round(session: Session, job: Job, rnd: Round, *, now: datetime) -> dict[str, int]:
    """Post the round's settlement (not committed); returns each included provider's share.

    Included means inside the sum the buyer downloads: the providers the accumulator itself
    lists (`rnd.acc_providers`), never merely those with a submission row.
    """
    submitted = _paid_providers(session, rnd)
    scores = groups.scores(session, job)
    weights = contribution_weights(submitted, scores)
    pool, fee = round_amounts(job, rnd.number)
    available = ledger.balance(session, ledger.job_escrow(job.id), job.currency)
    # Never more than the escrow holds: a job opens only once funded to its budget, so this
    # only bites if funds were refunded early.
    fee = min(fee, available)
    pool = min(pool, available - fee)
    shares = split(pool, weights) if weights else {}
    _post_round(session, job, rnd, shares=shares, fee=fee, weights=weights, scores=scores, now=now)
    return shares


def charge_cancel_fee(session: Session, job: Job, fee_bps: int, *, now: datetime) -> int:
    """The platform's cancellation fee: `fee_bps` of what is left in escrow (not committed)."""
    if fee_bps <= 0:
        return 0
    escrow = ledger.job_escrow(job.id)
    fee = ledger.balance(session, escrow, job.currency) * fee_bps // 10_000
    if fee > 0 and find(session, f"job:{job.id}:cancel-fee") is None:
        txn = ledger.post(
            session,
            key=f"job:{job.id}:cancel-fee",
            kind="fee",
            currency=job.currency,
            legs=[(escrow, -fee), (ledger.FEES, fee)],
            job_id=job.id,
            memo=f"cancellation fee ({fee_bps} bps of the escrow left)",
            now=now,
        )
        trust.log_settlement(
            session, current(), job, round=None, attempt=None, payees={}, fees_cents=fee,
            refund_cents=0, txns=[txn], now=now,
        )  # fmt: skip
    return fee


def record_funding(
    session: Session, job: Job, amount_cents: int, *, key: str, source: str, now: datetime
) -> LedgerTransaction:
    """Money received for a job: clearing → escrow (not committed)."""
    return ledger.post(
        session,
        key=key,
        kind="fund",
        currency=job.currency,
        legs=[(ledger.CLEARING, -amount_cents), (ledger.job_escrow(job.id), amount_cents)],
        job_id=job.id,
        memo=f"funding via {source}",
        meta={"source": source},
        now=now,
    )


def close_out(session: Session, job: Job, *, rail: str, now: datetime) -> Payment | None:
    """Move what is left in escrow to the buyer's refunds and queue the refund (not committed).

    Keyed by the job's last funding transaction: calling it again refunds nothing twice, and
    money arriving after the job ended (a late webhook) is refunded by the next call.
    """
    if job.state not in JOB_ENDED:
        return None
    escrow = ledger.job_escrow(job.id)
    left = ledger.balance(session, escrow, job.currency)
    if left <= 0:
        return None
    last_fund = session.exec(
        select(LedgerTransaction)
        .where(LedgerTransaction.job_id == job.id, LedgerTransaction.kind == "fund")
        .order_by(col(LedgerTransaction.seq).desc())
    ).first()
    key = f"job:{job.id}:refund:{last_fund.seq if last_fund else 0}"
    if find(session, key) is not None:
        return None
    txn = ledger.post(
        session,
        key=key,
        kind="refund",
        currency=job.currency,
        legs=[(escrow, -left), (ledger.buyer_refunds(job.buyer_id), left)],
        job_id=job.id,
        memo=f"unspent escrow of a {job.state} job",
        now=now,
    )
    trust.log_settlement(
        session, current(), job, round=None, attempt=None, payees={}, fees_cents=0,
        refund_cents=left, txns=[txn], now=now,
    )  # fmt: skip
    payment = Payment(
        id=new_id("pay"),
        job_id=job.id,
        rail=rail,
        kind="refund",
        amount_cents=left,
        currency=job.currency,
        status=PaymentStatus.PENDING if rail == "stripe" else PaymentStatus.RECORDED,
        key=key,
        created_at=now,
        updated_at=now,
    )
    session.add(payment)
    log.info("job %s: %d %s refunded to %s", job.id, left, job.currency, job.buyer_id)
    return payment


def job_rail(session: Session, job: Job) -> str:
    """The rail that funded the job: `stripe` if a PaymentIntent did, else `manual`."""
    paid = session.exec(
        select(Payment).where(
            Payment.job_id == job.id, Payment.kind == "funding", Payment.rail == "stripe"
        )
    ).first()
    return "stripe" if paid is not None else "manual"


def on_round_closed(session: Session, job: Job, rnd: Round, *, now: datetime) -> None:
    """Settle a round that just closed and record its reputation events (not committed)."""
    shares = settle_round(session, job, rnd, now=now)
    where = f"job {job.id} round {rnd.number}"
    reputation.record_all(
        session,
        [
            reputation.Event(pid, kind, reason, f"rep:{rnd.id}:{pid}:{suffix}", job.id, rnd.number)
            for pid in sorted(shares)
            for kind, reason, suffix in (
                ("on-time-submission", f"valid update before the deadline ({where})", "on-time"),
                ("included", f"update included in the aggregate ({where})", "included"),
            )
        ],
        now=now,
    )
    missing = sorted(set(rnd.expected) - set(shares))
    on_round_missed(session, job, rnd, missing, now=now)


def on_round_missed(
    session: Session, job: Job, rnd: Round, missing: list[str], *, now: datetime
) -> None:
    """Expected providers that had not submitted when the round's deadline passed.

    When nobody expected made it, the failure is the buyer's (a deadline nobody could meet,
    a model nobody could train): it costs no provider any reputation.
    """
    if rnd.deadline > now:
        return
    if set(missing) >= set(rnd.expected) and rnd.acc_count == 0:
        log.info("job %s round %d: every provider late; no one is blamed", job.id, rnd.number)
        return
    reason = f"no update by the deadline of job {job.id} round {rnd.number}"
    reputation.record_all(
        session,
        [
            reputation.Event(
                pid,
                "missed-deadline",
                reason,
                f"rep:{rnd.id}:{rnd.attempt}:{pid}:missed",
                job.id,
                rnd.number,
            )
            for pid in missing
        ],
        now=now,
    )


def on_job_ended(session: Session, job: Job, *, now: datetime) -> Payment | None:
    """A job reached a terminal state: reputation for a completed job, refund of the escrow."""
    if job.state == JobState.COMPLETED:
        # Credit for seeing the job through: a provider that left before the last round has
        # its missed deadlines on record and no completion to offset them.
        finishers = session.exec(
            select(Submission.provider_id)
            .where(Submission.job_id == job.id, Submission.round_number == job.rounds_total)
            .distinct()
        ).all()
        reputation.record_all(
            session,
            [
                reputation.Event(
                    pid,
                    "job-completed",
                    f"saw job {job.id} through to completion",
                    f"rep:{job.id}:{pid}:completed",
                    job.id,
                )
                for pid in sorted(finishers)
            ],
            now=now,
        )
    return close_out(session, job, rail=job_rail(session, job), now=now)
