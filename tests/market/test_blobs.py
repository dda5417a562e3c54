"""The blob store after a crash: uploads cut off mid-body do not pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from market.app import create_app
from market.config import Settings


def test_startup_removes_stale_partial_uploads(settings: Settings) -> None:
    """A server starting on a folder where a previous process died mid-upload deletes the
    stale partial file, and leaves one that is still being written (recent)."""
    tmp = Path(settings.blob_root) / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    stale = tmp / "upload-dead.part"
    live = tmp / "upload-live.part"
    stale.write_bytes(b"\0" * 1000)
    live.write_bytes(b"\0" * 1000)
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/reputation").status_code == 200
    assert not stale.exists()
    assert live.exists()
