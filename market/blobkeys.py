"""Blob keys: one function per kind of blob, so no caller spells a key by hand.

Everything of a job lives under `jobs/<job id>/`: its public context, its global models, and
per round its envelopes (until a checkpoint and its group's sum hold them), the partial sums
server processes checkpoint, and the merged round and group sums. A sum's key carries a fresh
id: a sum is written once and never overwritten, so a reader of an older key never sees a
newer sum's bytes.
"""

from __future__ import annotations

import re

from market.models.types import new_id

# Where an earlier version kept every accepted envelope; the startup sweep deletes them.
LEGACY_ENVELOPE = re.compile(r"^jobs/[^/]+/rounds/[^/]+/envelopes/[^/]+$")
LEGACY_ENVELOPE_GLOB = "jobs/*/rounds/*/envelopes/*"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def context(job_id: str, fingerprint: str) -> str:
    return f"jobs/{job_id}/context-{fingerprint[:16]}.bin"


def round_model(job_id: str, number: int) -> str:
    return f"jobs/{job_id}/models/round-{number:04d}.safetensors"


def final_model(job_id: str) -> str:
    return f"jobs/{job_id}/models/final.safetensors"


def round_prefix(job_id: str, number: int) -> str:
    return f"jobs/{job_id}/rounds/{number:04d}"


def envelope(job_id: str, number: int, submission_id: str) -> str:
    return f"{round_prefix(job_id, number)}/env-{submission_id}.bin"


def partial(job_id: str, number: int) -> str:
    return f"{round_prefix(job_id, number)}/partial-{new_id('prt')}.bin"


def round_sum(job_id: str, number: int) -> str:
    return f"{round_prefix(job_id, number)}/sum-{new_id('sum')}.bin"


def group_sum(job_id: str, number: int, index: int) -> str:
    return f"{round_prefix(job_id, number)}/group-{index:03d}-{new_id('sum')}.bin"
