"""SQLModel tables (registered on `SQLModel.metadata`) and the API's request/response shapes."""

from market.models.accounts import Account, AccountCreate, AccountCreated, AccountPublic, Role
from market.models.jobs import (
    TERMINAL_JOB_STATES,
    Credit,
    CreditCreate,
    CreditPublic,
    Job,
    JobCreate,
    JobPublic,
    RoundSummary,
)
from market.models.ledger import (
    LedgerAccount,
    LedgerPosting,
    LedgerReport,
    LedgerTransaction,
)
from market.models.limits import RateEvent, UploadClaim
from market.models.listings import Listing, ListingCreate, ListingPublic, ListingUpdate
from market.models.money import (
    ConnectedAccount,
    Payment,
    PaymentPublic,
    Payout,
    PayoutBatch,
    PayoutBatchPublic,
    PayoutPublic,
    ProviderEarnings,
    Receipt,
    ReputationEvent,
    ReputationEventPublic,
    ReputationPublic,
)
from market.models.offers import LIVE_OFFER_STATES, Offer, OfferPublic
from market.models.privacy import PrivacyReport, PrivacyReportCreate, PrivacyReportPublic
from market.models.rounds import (
    MetricsCreate,
    Round,
    RoundPublic,
    Submission,
    SubmissionReceipt,
)
from market.models.schema import DatasetSchema, FeatureSpec, LabelSpec
from market.models.translog import IdentityKey, LogLeaf

__all__ = [
    "LIVE_OFFER_STATES",
    "TERMINAL_JOB_STATES",
    "Account",
    "AccountCreate",
    "AccountCreated",
    "AccountPublic",
    "ConnectedAccount",
    "Credit",
    "CreditCreate",
    "CreditPublic",
    "DatasetSchema",
    "FeatureSpec",
    "IdentityKey",
    "Job",
    "JobCreate",
    "JobPublic",
    "LabelSpec",
    "LedgerAccount",
    "LedgerPosting",
    "LedgerReport",
    "LedgerTransaction",
    "Listing",
    "ListingCreate",
    "ListingPublic",
    "ListingUpdate",
    "LogLeaf",
    "MetricsCreate",
    "Offer",
    "OfferPublic",
    "Payment",
    "PaymentPublic",
    "Payout",
    "PayoutBatch",
    "PayoutBatchPublic",
    "PayoutPublic",
    "PrivacyReport",
    "PrivacyReportCreate",
    "PrivacyReportPublic",
    "ProviderEarnings",
    "RateEvent",
    "Receipt",
    "ReputationEvent",
    "ReputationEventPublic",
    "ReputationPublic",
    "Role",
    "Round",
    "RoundPublic",
    "RoundSummary",
    "Submission",
    "SubmissionReceipt",
    "UploadClaim",
]
