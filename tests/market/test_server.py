"""`serve` runs the real app under uvicorn on loopback, with a fresh data directory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_process_serves_the_api(tmp_path: Path) -> None:
    """A fresh data dir comes up migrated; /docs and the API answer over real HTTP."""
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "market", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/docs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.post(f"{base}/v1/accounts", json={"role": "provider", "name": "p"}, timeout=5)
        assert r.status_code == 201
        assert (tmp_path / "data" / "pollen.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_sqlite_serves_one_process_and_says_so(tmp_path: Path) -> None:
    """SQLite cannot lock rows across processes: `--workers 2` on it is refused before any
    worker starts, and a second server on a SQLite file already served exits, naming why."""
    data = str(tmp_path / "data")
    refused = subprocess.run(
        [sys.executable, "-m", "market", "--data-dir", data, "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--workers 2 needs PostgreSQL" in refused.stderr
    port = _free_port()
    first = subprocess.Popen(
        [sys.executable, "-m", "market", "--data-dir", data, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "market", "--data-dir", data, "--port", str(_free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0
        assert "another server process is running on" in second.stderr
        assert "use PostgreSQL" in second.stderr
        assert first.poll() is None  # the first one keeps serving
    finally:
        first.terminate()
        first.wait(timeout=10)
