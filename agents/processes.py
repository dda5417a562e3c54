"""Marketplace processes on loopback: a server (`python -m market`) and provider agents
(`python -m agents.cli agent run`) as real subprocesses, for the demo, the end-to-end tests
and the benchmarks.

- `free_port`: a free TCP port on 127.0.0.1;
- `start_server` / `wait_ready`: the server on a data folder (log in `server.log` there),
  and the wait until its OpenAPI document answers;
- `enroll_provider` / `start_agent`: a provider account approved by the operator, and the
  agent process running on a CSV of its own;
- `stop`: SIGTERM, then SIGKILL after 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agents.client import PollenClient
from agents.state import StateFile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path,
    port: int,
    admin_key: str,
    *,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "POLLEN_ADMIN_API_KEY": admin_key, **(extra_env or {})}
    log = (data_dir / "server.log").open("ab")
    cmd = [sys.executable, "-m", "market", "--data-dir", str(data_dir), "--port", str(port)]
    return subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def enroll_provider(operator: PollenClient, state_dir: Path, name: str) -> str:
    """Register a provider account for the agent that will run in `state_dir` and approve it
    as the operator (only verified providers are matched to jobs); the agent finds its key
    in its state file. Once per state folder; returns the account id."""
    state = StateFile(state_dir / "agent-state.json")
    if state.get("api_key"):
        return str(state.get("account_id"))
    created = operator.register(role="provider", name=name)
    operator.approve_provider(created.id)
    state.data.update(api_key=created.api_key, account_id=created.id)
    state.save()
    return str(created.id)


def start_agent(
    url: str,
    csv: Path,
    state_dir: Path,
    index: int,
    log_path: Path,
    extra: list[str] | None = None,
    *,
    operator: PollenClient | None = None,
) -> subprocess.Popen[bytes]:
    """A provider agent process; options in `extra` override the defaults (last one wins).

    With `operator` (an admin client) the agent's account is created and approved first
    (`enroll_provider`); without, the agent registers itself and waits for an operator."""
    cmd = [
        sys.executable,
        "-m",
        "agents.cli",
        "agent",
        "run",
        "--data",
        str(csv),
        "--server",
        url,
        "--name",
        f"provider-{index}",
        "--state-dir",
        str(state_dir),
        "--seed",
        str(index),
        "--classes",
        "0-9",
        "--ask-cents",
        str(100 + 10 * index),
        "--exit-after-jobs",
        "1",
        "--poll",
        "0.3",
        *(extra or []),
    ]
    if operator is not None:
        # The last `--name` wins, as for the agent's own option parsing.
        name = next(cmd[i + 1] for i in range(len(cmd) - 2, -1, -1) if cmd[i] == "--name")
        enroll_provider(operator, state_dir, name)
    return subprocess.Popen(
        cmd,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
