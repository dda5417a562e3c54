"""The service's one settings object, read from `POLLEN_*` environment variables.

Every knob has a default that makes the embedded setup work: a SQLite file and a blob folder
under `data_dir` (`.pollen` in the working directory). `POLLEN_BLOB_URL=s3://bucket/prefix`
(with `POLLEN_S3_*`) keeps blobs in an S3-compatible bucket instead.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from market.blobs import parse_blob_url


class Settings(BaseSettings):
    """Configuration of one marketplace process."""

    model_config = SettingsConfigDict(env_prefix="POLLEN_", extra="ignore")

    data_dir: Path = Path(".pollen")
    # Empty means "derive from data_dir" (see the validator below).
    database_url: str = ""
    blob_dir: Path | None = None
    # Where blobs live: a folder (a path or file:///path; default `data_dir/blobs`) or an
    # S3-compatible bucket, `s3://bucket/prefix`, reached with the `s3_*` settings below.
    # Without an access key boto3's own chain (AWS_* variables, ~/.aws) is used.
    blob_url: str = ""
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # An admin account with this key is ensured at startup when set.
    admin_api_key: str | None = None

    # Seconds between two passes of the background deadline enforcer (every server process
    # runs one); 0 disables the task (deadlines are then enforced only by writes that touch
    # the round: a submission, a published model, an offer decision).
    deadline_tick_s: float = Field(default=1.0, ge=0)

    # Upper bounds for buyer uploads; envelopes are bounded by the crypto preset instead.
    max_context_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_model_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # An envelope upload that sends no byte for this long is abandoned with 408 and its temp
    # file removed: uvicorn has no timeout for a request body that stalls mid-way.
    upload_idle_timeout_s: float = Field(default=30.0, gt=0)

    # Each server process adds the updates it accepts into a partial sum of its own in
    # memory and writes it out (a checkpoint) every this many updates or this many seconds,
    # whichever comes first; the round's close merges the checkpoints and replays the rest
    # from their stored envelopes, so a crash between checkpoints loses nothing.
    checkpoint_updates: int = Field(default=16, ge=1)
    checkpoint_seconds: float = Field(default=5.0, gt=0)

    # The plaintext preset sends updates in the clear: only `python -m bench round` turns
    # this on, to measure what encryption costs through the same API and processes.
    allow_plaintext_jobs: bool = False

    # Apply Alembic migrations at startup so a fresh data directory just works.
    auto_migrate: bool = True

    # Money. No Stripe key selects the `manual` rail (an operator credits funding and pays
    # out a CSV batch); a key selects `stripe` (PaymentIntents, Refunds, Connect transfers).
    stripe_api_key: str | None = None
    # Where the Stripe API lives (localstripe on loopback in tests and the demo).
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    # Connect (accounts, transfers); unset on the stripe rail means payouts go out as a
    # manual CSV batch (localstripe has no Connect).
    stripe_connect_api_base: str | None = None
    # The shortest round deadline a job may set: a buyer cannot make providers miss rounds
    # (and lose reputation) with a deadline nobody can meet.
    min_round_deadline_s: int = Field(default=30, ge=1)
    # Taken from what is left in escrow when a buyer cancels a running job (after the
    # collecting round's submitters are paid); 0 = no fee.
    cancel_fee_bps: int = Field(default=0, ge=0, le=10_000)
    # Only verified providers (an operator's approval, or a Stripe Connect account with
    # `payouts_enabled`) are matched to jobs, so only they count toward any quorum: a buyer's
    # sybil provider accounts cannot isolate a real provider's update. Off only for a closed
    # setup where every account is known.
    require_verified_providers: bool = True
    # The platform's fee in basis points of a job's budget (500 = 5%).
    platform_fee_bps: int = Field(default=500, ge=0, le=10_000)
    # Reputation: an event `age` days old counts decay**age.
    reputation_decay: float = Field(default=0.98, gt=0, le=1)

    # Failed authentication: past `auth_fail_limit` bad keys from one client address within
    # `auth_fail_window_s` seconds, further bad keys from it get 429 until the window passes
    # (a correct key always works). Counted in the database, so shared by every process.
    auth_fail_limit: int = Field(default=20, ge=1)
    auth_fail_window_s: float = Field(default=60.0, gt=0)
    # Account registrations per client address per window, across processes.
    register_limit: int = Field(default=200, ge=1)
    register_window_s: float = Field(default=3600.0, gt=0)
    # Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed: comma-separated
    # addresses or networks ("10.0.0.5,192.168.0.0/16"). Empty (the default) believes no
    # one, loopback included: the client address is the socket's peer.
    trusted_proxies: str = ""

    # Per-account quotas: active listings of one provider, draft jobs of one buyer. Every
    # listing change re-runs matching over all listings under one lock; 4,000 listings from
    # one provider took listing changes from 40 ms to 510 ms for everyone.
    max_listings_per_provider: int = Field(default=100, ge=1)
    max_draft_jobs_per_buyer: int = Field(default=20, ge=1)

    # The web dashboard under /ui: a signed session cookie set at login with an API key.
    # Empty secret means one is generated into `data_dir` (mode 0600) on first use.
    ui_session_secret: str = ""
    ui_session_ttl_s: int = Field(default=8 * 3600, gt=0)

    # The server's Ed25519 signing key (64 hex digits) for tree heads and receipts. Empty
    # means one is generated into `data_dir/signing.key` (mode 0600) on first start.
    signing_key: str = ""

    @property
    def trusted_proxy_list(self) -> list[str]:
        """`trusted_proxies` as a list, each entry checked to be an address or a network."""
        entries = [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]
        for entry in entries:
            ipaddress.ip_network(entry, strict=False)
        return entries

    @property
    def rail(self) -> str:
        """The payment rail this process runs: `stripe` or `manual`."""
        return "stripe" if self.stripe_api_key else "manual"

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        try:
            self.trusted_proxy_list  # noqa: B018  (validates the entries)
        except ValueError as exc:
            raise ValueError(f"POLLEN_TRUSTED_PROXIES: {exc}") from None
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'pollen.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if not self.blob_url:
            self.blob_url = str(self.blob_dir)
        kind, where = parse_blob_url(self.blob_url)
        if kind == "file":
            self.blob_dir = Path(where)
        return self

    @property
    def blob_root(self) -> Path:
        """The blob folder, always set after validation (unused when blobs are on S3)."""
        assert self.blob_dir is not None
        return self.blob_dir
