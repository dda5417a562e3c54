"""Stripe on loopback for the tests: localstripe as a subprocess, the app under uvicorn in a
thread (so localstripe's webhooks reach it over real HTTP), and webhook registration."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@contextmanager
def localstripe(log_dir: Path) -> Iterator[str]:
    """`python -m localstripe --from-scratch` on a free port; yields its base URL."""
    port = free_port()
    log = (log_dir / "localstripe.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/customers")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def register_webhook(stripe_url: str, target: str, secret: str, hook_id: str = "pollen") -> None:
    """Point localstripe's events at `target`, signed with `secret` (replaces `hook_id`)."""
    r = httpx.post(
        f"{stripe_url}/_config/webhooks/{hook_id}", data={"url": target, "secret": secret}
    )
    r.raise_for_status()


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in this process; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
