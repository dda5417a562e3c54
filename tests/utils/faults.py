"""Faults on loopback for the end-to-end tests, without test hooks in product code.

`FaultProxy` is a TCP proxy between one client process and the server that understands just
enough HTTP/1.1 to stall a chosen request: it forwards the request line, the headers and a
part of the body, then holds the rest until `release()` (it keeps reading what the client
sends, so the client believes its upload is in flight). Kill the client while a request is
held and the server sees a connection cut in the middle of a body; kill the server and the
client sees its connection drop. Everything else passes through untouched.

`ServerProcess`, `start_buyer`, `wait_for` and `LogFile` drive the real processes: the
marketplace under uvicorn (restartable on the same port, data folder and database), provider
agents and the buyer client as `python -m agents.cli` subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from agents.processes import free_port, start_server, stop, wait_ready
from tests.utils import postgres

T = TypeVar("T")

_HEAD_END = b"\r\n\r\n"
_CHUNK = 65536


@dataclass(frozen=True)
class HeldRequest:
    """A request the proxy stalled: its request line, declared body size and bytes let through."""

    line: str
    content_length: int
    forwarded: int


class FaultProxy:
    """A loopback TCP proxy that can hold matching requests in the middle of their body."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._cond = threading.Condition()
        self._pattern: re.Pattern[str] | None = None
        self._fraction = 0.5
        self._release = threading.Event()
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self.lines: list[str] = []
        self.held: list[HeldRequest] = []
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    # -- control ---------------------------------------------------------------------------

    def hold(self, pattern: str, *, fraction: float = 0.5) -> None:
        """Stall every request whose request line matches `pattern` (a regex) after
        forwarding its headers and `fraction` of its body, until `release()`."""
        with self._cond:
            self._pattern = re.compile(pattern)
            self._fraction = fraction
            self._release = threading.Event()

    def release(self) -> None:
        """Let held requests finish and stop holding new ones."""
        with self._cond:
            self._pattern = None
            self._release.set()

    def wait_held(self, count: int = 1, timeout: float = 60.0) -> HeldRequest:
        """Block until `count` requests were held in total; returns the latest."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.held) >= count, timeout):
                raise TimeoutError(f"no held request #{count} after {timeout:.0f}s: {self.lines}")
            return self.held[-1]

    def seen(self, pattern: str) -> int:
        """How many requests whose request line matches `pattern` went through so far."""
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def close(self) -> None:
        self._closed = True
        self.release()
        _close(self._listener)
        with self._cond:
            for sock in list(self._sockets):
                _close(sock)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            _close(client)  # the server is down: the client sees its connection drop
            return
        upstream.settimeout(None)
        client.settimeout(0.1)
        with self._cond:
            self._sockets.update((client, upstream))
        back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        back.start()
        try:
            self._forward_requests(client, upstream)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)
            with self._cond:
                self._sockets.difference_update((client, upstream))

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Server to client, byte for byte; when the server goes, so does the client's line."""
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(dst)
            _shutdown(src)

    def _recv(self, sock: socket.socket) -> bytes:
        while True:
            try:
                return sock.recv(_CHUNK)
            except TimeoutError:
                if self._closed:
                    return b""

    def _forward_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buf = b""
        while True:
            while _HEAD_END not in buf:
                data = self._recv(client)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(_HEAD_END)
            head += _HEAD_END
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            headers = head.decode("latin-1").lower()
            if "transfer-encoding: chunked" in headers:
                upstream.sendall(head + buf)  # not parsed: pass the rest of the line through
                while data := self._recv(client):
                    upstream.sendall(data)
                return
            match = re.search(r"\r\ncontent-length:\s*(\d+)", headers)
            length = int(match.group(1)) if match else 0
            with self._cond:
                self.lines.append(line)
                holding = self._pattern is not None and self._pattern.search(line) is not None
                fraction, release = self._fraction, self._release
            sent = 0
            if holding:
                cut = min(length, int(length * fraction))
                while len(buf) < cut:
                    data = self._recv(client)
                    if not data:
                        return
                    buf += data
                upstream.sendall(head + buf[:cut])
                sent, buf = cut, buf[cut:]
                with self._cond:
                    self.held.append(HeldRequest(line, length, cut))
                    self._cond.notify_all()
                # Keep draining the client so its upload looks in flight; a client that dies
                # here leaves the server with a body cut short.
                while not release.is_set():
                    try:
                        data = client.recv(_CHUNK)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buf += data
            else:
                upstream.sendall(head)
            remaining = length - sent
            while True:
                piece, buf = buf[:remaining], buf[remaining:]
                upstream.sendall(piece)
                remaining -= len(piece)
                if remaining == 0:
                    break
                data = self._recv(client)
                if not data:
                    return
                buf += data


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    sock.close()


# ---------------------------------------------------------------------------- processes


def wait_for(predicate: Callable[[], T | None], what: str, *, timeout: float = 60.0) -> T:
    """Poll `predicate` until it returns something truthy (a match, a non-empty list, True)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what} after {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class LogFile:
    """A process's log, read as it grows; `mark()` then `wait(pattern)` sees only new lines."""

    path: Path
    offset: int = 0

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def mark(self) -> None:
        self.offset = len(self.text())

    def wait(
        self, pattern: str, *, timeout: float = 60.0, alive: subprocess.Popen[bytes] | None = None
    ) -> re.Match[str]:
        """The first match of `pattern` after the mark; fails early if `alive` exits."""

        def found() -> re.Match[str] | None:
            match = re.search(pattern, self.text()[self.offset :])
            if match is None and alive is not None and alive.poll() is not None:
                raise AssertionError(
                    f"process exited ({alive.returncode}) before {pattern!r}:\n{self.text()}"
                )
            return match

        return wait_for(found, f"{pattern!r} in {self.path.name}", timeout=timeout)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """kill -9, then reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@dataclass
class ServerProcess:
    """The marketplace under uvicorn; `kill()` + `start()` restarts it on the same port,
    data folder and database."""

    data_dir: Path
    port: int
    admin_key: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> LogFile:
        return LogFile(self.data_dir / "server.log")

    def start(self) -> None:
        self.proc = start_server(self.data_dir, self.port, self.admin_key, extra_env=self.env)
        wait_ready(self.url, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        sigkill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def serve_restartable(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, env: dict[str, str]
) -> Iterator[ServerProcess]:
    """A `ServerProcess` on SQLite or on its own database of the session's PostgreSQL server
    (dropped afterwards), for a fixture to `yield from`."""
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    env = dict(env)
    name = None
    if backend == "postgres":
        pg: str = request.getfixturevalue("pg_server")
        name = f"pollen_e2e_{uuid.uuid4().hex[:10]}"
        env["POLLEN_DATABASE_URL"] = postgres.create_database(pg, name)
    else:
        env["POLLEN_DATABASE_URL"] = f"sqlite:///{data_dir / 'pollen.db'}"
    srv = ServerProcess(data_dir, free_port(), secrets.token_urlsafe(16), env)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if name is not None:
            postgres.drop_database(request.getfixturevalue("pg_server"), name)


def start_buyer(
    url: str,
    job_id: str,
    api_key: str,
    keys: Path,
    test_csv: Path,
    out_dir: Path,
    log_path: Path,
    *,
    retry_for: float = 120.0,
) -> subprocess.Popen[bytes]:
    """`pollen job run` as its own process, polling fast and retrying with short waits."""
    cmd = [
        sys.executable, "-m", "agents.cli", "job", "run", job_id,
        "--test", str(test_csv), "--server", url, "--api-key", api_key, "--keys", str(keys),
        "--out", str(out_dir), "--poll", "0.2", "--retry-for", str(retry_for),
        "--max-retry-wait", "1",
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
