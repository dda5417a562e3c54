"""`pollen server --workers N`: N server processes, each accepting on its own socket.

uvicorn's own `--workers` hands one listening socket to every process, and whichever event
loop wakes first takes the next connection. An upload's work runs on threads, so a busy
worker's loop is as quick to accept as an idle one's: measured with `python -m bench scale`
(300 uploads at once, 2 workers), one worker took 203 uploads and the other 95, and the
round went at the busier one's pace. Here each worker binds its own socket to the same
address with `SO_REUSEPORT`, and the kernel spreads new connections over the sockets by a
hash of each connection's addresses, so N workers each get about 1/N of them.

The supervisor holds a socket bound to the address (not listening, so the kernel never hands
it a connection) for as long as it runs: no other program can take the port meanwhile, and a
second `pollen server` on it is refused at start instead of silently sharing the traffic. A
worker that dies is started again; one that fails before it serves (code 3, uvicorn's startup
failure, or an error within seconds of its start) is given a new try, up to `STARTUP_TRIES`
in all, after which the whole server stops: a failure that repeats is one its replacements
would meet too, and restarting them forever would hide it. SIGINT or
SIGTERM stops every worker gracefully (uvicorn finishes the requests under way).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start serving
STARTUP_TRIES = 3  # failed starts, over the server's life, before it gives up
YOUNG_S = 10.0  # a worker that errors out sooner than this after its start failed to start
STOP_GRACE_S = 30.0


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port (not listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def claim_address(host: str, port: int) -> socket.socket:
    """The supervisor's hold on host:port: refused at once if anything else is bound there
    (a plain bind first, since a second SO_REUSEPORT socket of our own user would join
    the port's group instead of failing)."""
    try:
        bind(host, port, reuse_port=False).close()
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return bind(host, port, reuse_port=True)


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: its own socket on the shared address, the app from the
    environment (`market.app:create_app`)."""
    # Imports the app: here, not above.
    from market.server import configure_logging, return_large_buffers_to_the_os

    configure_logging()
    return_large_buffers_to_the_os()
    sock = bind(host, port, reuse_port=True)
    config = uvicorn.Config("market.app:create_app", factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Starts `count` workers, restarts one that dies, stops them all on SIGINT/SIGTERM."""

    def __init__(self, host: str, port: int, count: int, options: dict[str, Any]) -> None:
        self.host, self.port, self.count, self.options = host, port, count, options
        self._spawn = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self.processes: list[BaseProcess] = []
        self._started: dict[int, float] = {}

    def _young(self, proc: BaseProcess) -> bool:
        """Died of an error (not a signal) within `YOUNG_S` of its start: a crash at import
        or configuration, which a new process would repeat."""
        return time.monotonic() - self._started.get(proc.pid or 0, 0.0) < YOUNG_S

    def _start_one(self) -> BaseProcess:
        proc = self._spawn.Process(
            target=_worker, args=(self.host, self.port, self.options), daemon=False
        )
        proc.start()
        self._started[proc.pid or 0] = time.monotonic()
        log.info("started worker process %s on %s:%d", proc.pid, self.host, self.port)
        return proc

    def run(self) -> int:
        """Serve until stopped; the exit code for the command."""
        held = claim_address(self.host, self.port)
        previous = {
            sig: signal.signal(sig, lambda *_: self._stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.processes = [self._start_one() for _ in range(self.count)]
            return self._watch()
        finally:
            self._stop_all()
            held.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> int:
        failed_starts = 0
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self.processes):
                if proc.is_alive():
                    continue
                code = proc.exitcode or 0
                if code == STARTUP_FAILURE or (code > 0 and self._young(proc)):
                    failed_starts += 1
                    if failed_starts >= STARTUP_TRIES:
                        log.error("worker %s could not start; stopping the server", proc.pid)
                        return 1
                log.warning("worker %s exited with %s; starting another", proc.pid, proc.exitcode)
                self.processes[i] = self._start_one()
        return 0

    def _stop_all(self) -> None:
        for proc in self.processes:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: uvicorn drains the requests under way
        for proc in self.processes:
            proc.join(STOP_GRACE_S)
            if proc.is_alive():
                log.warning("worker %s did not stop in %.0fs; killing it", proc.pid, STOP_GRACE_S)
                proc.kill()
                proc.join()
