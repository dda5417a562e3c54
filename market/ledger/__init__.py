"""The double-entry ledger every movement of money goes through.

Rules (after django-hordak's Account / Transaction / Leg):

1. An **account** is a name such as `job:<id>:escrow`; its kind is the last segment. Accounts
   are created on first use and never change.
2. A **transaction** has at least two **postings** (legs); each posting is a non-zero signed
   integer amount of minor units (cents), never a float; the postings of a transaction sum to
   exactly zero; all postings of a transaction share its currency.
3. Every transaction carries an **idempotency key**: posting the same key again returns the
   first transaction and changes nothing (a different content under the same key is refused).
4. The journal is **append-only**: no transaction or posting is ever updated or deleted;
   corrections are new transactions.
5. The journal is a **hash chain**: transaction `seq = n` stores the hash of `n - 1` as
   `prev_hash` and `hash = sha256(prev_hash + canonical JSON of itself and its postings)`.
   Appends are serialized, and `seq` is unique, so the chain is linear.
6. Only `platform:clearing` (the mirror of money outside the platform) may go negative; every
   other account stays at or above zero.

Each rule is enforced twice: here in Python (one exception class per rule, see
`market.errors`) and in the database (migration 0002: triggers refuse UPDATE and DELETE on
both backends; on PostgreSQL a deferred constraint trigger checks that a transaction's postings
sum to zero, on SQLite the transaction row, inserted after its postings, checks them).

Sign convention: a positive amount is money arriving in the account. Money flows

    platform:clearing ─fund─► job:J:escrow ─settle─► provider:P:payable ─payout─► provider:P:paid
                                   │         └─settle─► platform:fees
                                   └─refund─► buyer:B:refunds

so, per currency, funded (= −clearing) = paid (payable + paid) + fees + refunded + escrow is a
sum of balances, and per job the same identity holds over the transactions tagged with the job.
"""

from market.ledger.chain import GENESIS, canonical, chain_hash, verify
from market.ledger.journal import (
    balance,
    balances,
    job_totals,
    post,
    totals,
    transactions,
)
from market.ledger.names import (
    CLEARING,
    FEES,
    buyer_refunds,
    job_escrow,
    provider_paid,
    provider_payable,
)

__all__ = [
    "CLEARING",
    "FEES",
    "GENESIS",
    "balance",
    "balances",
    "buyer_refunds",
    "canonical",
    "chain_hash",
    "job_escrow",
    "job_totals",
    "post",
    "provider_paid",
    "provider_payable",
    "totals",
    "transactions",
    "verify",
]
