"""`serve` runs the real app under uvicorn on loopback, with a fresh data directory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
