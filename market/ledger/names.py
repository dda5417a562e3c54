"""Ledger account names: one function per kind, so no caller spells a name by hand."""

from __future__ import annotations

CLEARING = "platform:clearing"
FEES = "platform:fees"

# Kinds whose balance may go below zero: only the mirror of the outside world.
MAY_GO_NEGATIVE = frozenset({"clearing"})
KINDS = frozenset({"clearing", "escrow", "payable", "paid", "fees", "refunds"})


def job_escrow(job_id: str) -> str:
    return f"job:{job_id}:escrow"


def provider_payable(provider_id: str) -> str:
    return f"provider:{provider_id}:payable"


def provider_paid(provider_id: str) -> str:
    return f"provider:{provider_id}:paid"


def buyer_refunds(buyer_id: str) -> str:
    return f"buyer:{buyer_id}:refunds"


def kind_of(name: str) -> str:
    """The account's kind, its name's last segment (`job:x:escrow` → `escrow`)."""
    kind = name.rsplit(":", 1)[-1]
    if kind not in KINDS:
        raise ValueError(f"unknown account kind in {name!r}")
    return kind


def owner_of(name: str) -> str | None:
    """The id in the middle of `provider:<id>:payable`, or None for platform accounts."""
    parts = name.split(":")
    return parts[1] if len(parts) == 3 else None
