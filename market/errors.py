"""The marketplace's exceptions, a branch of the project-wide `PollenError` tree.

    PollenError (crypto.errors)
    └── MarketError                      status 400 unless a subclass says otherwise
        ├── AuthenticationError          401 no or unknown API key
        ├── PermissionDeniedError        403 authenticated but not allowed
        ├── NotFoundError                404 missing, or not visible to the caller
        ├── InvalidInputError            422 well-formed JSON that breaks a domain rule
        ├── PayloadTooLargeError         413 an upload beyond its size limit
        ├── UploadStalledError           408 an upload's body stopped arriving
        ├── RateLimitedError             429 too many of something from one address; Retry-After
        │   ├── TooManyFailedAttemptsError  failed authentications
        │   └── TooManyRegistrationsError   account registrations
        └── ConflictError                409 the resource is not in a state that allows it
            ├── QuotaExceededError       409 an account at its quota (listings, draft jobs)
            ├── UploadInProgressError    409 this provider's upload for the round is under way
            ├── InvalidStateError        409 e.g. funding a job that is already running
            ├── OfferExpiredError        409 accepting an offer after its deadline
            ├── RoundClosedError         409 submitting to a round that is not collecting
            ├── DuplicateSubmissionError 409 a second upload; carries the first result
            ├── AggregateUnavailableError 409 aggregate of an open or below-quorum round
            └── IdempotencyConflictError 409 a key reused for a different request
        ├── LedgerError                  422 a posting that breaks an accounting rule
        │   ├── UnbalancedTransactionError  postings do not sum to zero
        │   ├── TooFewPostingsError         fewer than two postings
        │   ├── ZeroPostingError            a posting of zero
        │   ├── NonIntegerPostingError      an amount that is not an integer number of cents
        │   ├── InsufficientFundsError      an account would go below zero where it must not
        │   └── ImmutableLedgerError        an update or delete of a journal row (500)
        ├── PaymentError                 502 the payment rail (Stripe) failed or refused
        ├── WebhookSignatureError        400 a webhook whose signature does not verify
        ├── DatabaseInUseError           a second server process on one SQLite file (startup)
        └── BlobStoreUnavailableError    503 the S3 bucket is absent, refuses us, or is down

Every class has a stable `code` slug and an HTTP `status`; `market.problems` turns any
`PollenError`, crypto's included, into `application/problem+json` in one place.
"""

from __future__ import annotations

from typing import Any

from crypto.errors import PollenError


class MarketError(PollenError):
    """Base of the service's deliberate errors; `extra` lands in the problem body."""

    status = 400
    code = "market-error"
    title = "Request refused"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class AuthenticationError(MarketError):
    status = 401
    code = "unauthenticated"
    title = "Missing or unknown API key"


class PermissionDeniedError(MarketError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFoundError(MarketError):
    status = 404
    code = "not-found"
    title = "Not found"


class InvalidInputError(MarketError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class PayloadTooLargeError(MarketError):
    status = 413
    code = "payload-too-large"
    title = "Upload too large"


class UploadStalledError(MarketError):
    """The sender stopped sending an upload's body before it was complete."""

    status = 408
    code = "upload-stalled"
    title = "Upload stalled"


class RateLimitedError(MarketError):
    """Too many from one address; `retry_after` (seconds) becomes `Retry-After`."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class TooManyFailedAttemptsError(RateLimitedError):
    """A wrong key from an address past the failure limit (a correct key still passes)."""

    code = "too-many-failed-attempts"
    title = "Too many failed authentication attempts"


class TooManyRegistrationsError(RateLimitedError):
    code = "too-many-registrations"
    title = "Too many accounts registered from this address"


class ConflictError(MarketError):
    status = 409
    code = "conflict"
    title = "Conflict"


class QuotaExceededError(ConflictError):
    """`quota` names the setting, `limit` its value."""

    code = "quota-exceeded"
    title = "Account quota reached"

    def __init__(self, message: str, *, quota: str, limit: int) -> None:
        super().__init__(message, quota=quota, limit=limit)


class UploadInProgressError(ConflictError):
    """`retry_after` (seconds) becomes `Retry-After`: by then the other upload has ended or
    its claim has gone stale."""

    code = "upload-in-progress"
    title = "An upload for this round is already under way"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class InvalidStateError(ConflictError):
    code = "invalid-state"
    title = "Not allowed in the current state"


class OfferExpiredError(ConflictError):
    code = "offer-expired"
    title = "Offer expired"


class RoundClosedError(ConflictError):
    code = "round-not-collecting"
    title = "Round is not collecting submissions"


class DuplicateSubmissionError(ConflictError):
    code = "duplicate-submission"
    title = "Already submitted for this round"


class AggregateUnavailableError(ConflictError):
    code = "aggregate-unavailable"
    title = "Aggregate not available"


class IdempotencyConflictError(ConflictError):
    code = "idempotency-conflict"
    title = "Idempotency key reused for a different request"


class LedgerError(MarketError):
    """A ledger transaction that breaks one of the rules of `market.ledger`."""

    status = 422
    code = "ledger-error"
    title = "Ledger rule broken"


class UnbalancedTransactionError(LedgerError):
    code = "ledger-unbalanced"
    title = "Postings do not sum to zero"


class TooFewPostingsError(LedgerError):
    code = "ledger-too-few-postings"
    title = "A transaction needs at least two postings"


class ZeroPostingError(LedgerError):
    code = "ledger-zero-posting"
    title = "A posting is never zero"


class NonIntegerPostingError(LedgerError):
    code = "ledger-non-integer-posting"
    title = "A posting is an integer number of minor units"


class InsufficientFundsError(LedgerError):
    status = 409
    code = "ledger-insufficient-funds"
    title = "Account balance would go negative"


class ImmutableLedgerError(LedgerError):
    status = 500
    code = "ledger-immutable"
    title = "Ledger entries are never updated or deleted"


class PaymentError(MarketError):
    status = 502
    code = "payment-rail-error"
    title = "Payment rail error"


class WebhookSignatureError(MarketError):
    status = 400
    code = "webhook-signature"
    title = "Webhook signature invalid"


class DatabaseInUseError(MarketError):
    """Raised at startup, never by a request: SQLite serves one server process."""

    status = 500
    code = "database-in-use"
    title = "Database in use by another server process"


class BlobStoreUnavailableError(MarketError):
    """The configured S3 bucket cannot be used: at startup (absent, bad credentials) the
    server refuses to start with this message; during a request it is a 503."""

    status = 503
    code = "blob-store-unavailable"
    title = "Blob storage unavailable"
