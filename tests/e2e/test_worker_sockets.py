"""`pollen server --workers N`: each worker accepts on its own socket, and connections spread.

With one listening socket shared by every worker (uvicorn's own `--workers`), whichever
event loop woke first took the connection: in `python -m bench scale` one of 2 workers took
203 of 300 uploads and the round went at its pace. These tests read the kernel's own tables
(/proc/net/tcp and each process's file descriptors) to see which process holds which socket.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agents.processes import free_port, start_server, stop, wait_ready
from tests.utils import postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

LISTEN = "0A"  # TCP state of a listening socket in /proc/net/tcp
ESTABLISHED = "01"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    data_dir: Path


@pytest.fixture
def two_workers(pg_server: str, tmp_path: Path) -> Iterator[Served]:
    name = f"pollen_sockets_{uuid.uuid4().hex[:10]}"
    database_url = postgres.create_database(pg_server, name)
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    port = free_port()
    env = {"POLLEN_DATABASE_URL": database_url}
    proc = start_server(data_dir, port, secrets.token_urlsafe(16), extra_env=env, workers=2)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield Served(proc, port, env, data_dir)
    finally:
        stop(proc)
        postgres.drop_database(pg_server, name)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry))
    return out


def _tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of every IPv4 TCP socket whose local port is `port`."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if int(local.split(":")[1], 16) == port:
            rows.append((state, int(remote.split(":")[1], 16), inode))
    return rows


def _socket_owners(pids: list[int]) -> dict[int, int]:
    """Socket inode → the process holding it, among `pids`."""
    owners = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def _listeners(served: Served) -> dict[int, int]:
    """Listening socket inode → worker pid."""
    workers = _children(served.proc.pid)
    owners = _socket_owners(workers)
    return {
        inode: owners[inode]
        for state, _, inode in _tcp_sockets(served.port)
        if state == LISTEN and inode in owners
    }


def _wait_listeners(
    served: Served, count: int, timeout: float = 60.0, gone: int | None = None
) -> dict[int, int]:
    """Wait for `count` workers listening, none of them `gone` (a killed worker's
    sockets stay in /proc until the kernel has torn the process down)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _listeners(served)
        if (len(set(found.values())) == count and gone not in found.values()) or (
            time.monotonic() > deadline
        ):
            return found
        time.sleep(0.2)


def test_each_worker_listens_on_its_own_socket_and_connections_spread(two_workers: Served) -> None:
    listeners = _wait_listeners(two_workers, 2)
    assert len(listeners) == 2, "each worker has its own listening socket"
    assert len(set(listeners.values())) == 2, "held by two different workers"
    # The supervisor holds the address, but not a listening socket: it is handed nothing.
    supervisor = _socket_owners([two_workers.proc.pid])
    assert not set(supervisor) & set(listeners)

    # 40 connections, each answered once (so accepted), then seen in the kernel's table.
    clients = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", two_workers.port), timeout=10)
        s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(12).startswith(b"HTTP/1.1 200")
        clients.append(s)
    try:
        ours = {s.getsockname()[1] for s in clients}
        owners = _socket_owners(list(set(listeners.values())))
        served_by = Counter(
            owners[inode]
            for state, remote, inode in _tcp_sockets(two_workers.port)
            if state == ESTABLISHED and remote in ours and inode in owners
        )
    finally:
        for s in clients:
            s.close()
    assert sum(served_by.values()) == 40
    # Spread by a hash of each connection's ports: P(a worker gets fewer than 8 of 40) ≈ 1e-5.
    assert len(served_by) == 2 and min(served_by.values()) >= 8, served_by


def test_a_killed_worker_is_replaced_and_a_second_server_on_the_port_is_refused(
    two_workers: Served, tmp_path: Path
) -> None:
    first = _wait_listeners(two_workers, 2)
    victim = sorted(set(first.values()))[0]
    os.kill(victim, signal.SIGKILL)
    again = _wait_listeners(two_workers, 2, gone=victim)
    assert victim not in again.values() and len(set(again.values())) == 2
    url = f"http://127.0.0.1:{two_workers.port}"
    assert all(httpx.get(f"{url}/openapi.json", timeout=10).status_code == 200 for _ in range(6))

    other = tmp_path / "other"
    other.mkdir()
    refused = subprocess.run(
        [sys.executable, "-m", "market", "--data-dir", str(other), "--port",
         str(two_workers.port), "--workers", "2"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **two_workers.env},
    )  # fmt: skip
    assert refused.returncode != 0
    assert f"cannot listen on 127.0.0.1:{two_workers.port}" in refused.stderr

    workers = set(again.values())
    two_workers.proc.send_signal(signal.SIGTERM)
    assert two_workers.proc.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
