"""The job's public context, parsed once per process and kept for the jobs in use.

Every upload is checked against its job's public context, and parsing one (SEAL's keys)
costs more than checking a small envelope, so each server process keeps the last few it
parsed, keyed by the fingerprint the job's row records.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from crypto import PublicContext
from market.blobs import BlobStore
from market.models import Job

_context_guard = threading.Lock()
_contexts: OrderedDict[str, PublicContext] = OrderedDict()
_CONTEXT_CACHE = 16


def job_context(blobs: BlobStore, job: Job) -> PublicContext:
    """The job's public context, parsed once per process (keyed by its fingerprint)."""
    assert job.context_key is not None and job.fingerprint is not None
    with _context_guard:
        ctx = _contexts.get(job.fingerprint)
        if ctx is not None:
            _contexts.move_to_end(job.fingerprint)
            return ctx.for_preset(job.preset_id)
    ctx = PublicContext.from_bytes(blobs.get_bytes(job.context_key))
    with _context_guard:
        _contexts[job.fingerprint] = ctx
        while len(_contexts) > _CONTEXT_CACHE:
            _contexts.popitem(last=False)
    return ctx.for_preset(job.preset_id)
