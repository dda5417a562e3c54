"""Seconds per phase of a round, gathered from the processes that spend them.

Agents keep theirs in their state file (`jobs[job]["timings"][round]`: train, encode,
encrypt, upload). The server's are measured by running it through `python -m bench.phases
serve …` (the ordinary `python -m market` with timers around an upload's validation, every
ciphertext addition, every replay of a stored envelope, the whole submission and round
closing), which logs one
`bench-phase NAME SECONDS` line per call. The buyer's (download, decrypt, step) are timed
in the benchmark's own process.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_LINE = re.compile(rb"bench-phase (\w+) ([0-9.]+)")


class Stopwatch:
    """Seconds accumulated per phase name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - tick

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


def agent_phases(state_dirs: list[Path], job_id: str, rounds: list[int]) -> dict[str, float]:
    """Mean seconds per agent and round for each agent phase of `rounds`."""
    samples: dict[str, list[float]] = defaultdict(list)
    for state_dir in state_dirs:
        path = state_dir / "agent-state.json"
        if not path.exists():
            continue
        job = json.loads(path.read_text()).get("jobs", {}).get(job_id, {})
        for number in rounds:
            for name, seconds in job.get("timings", {}).get(str(number), {}).items():
                samples[name].append(float(seconds))
    return {name: statistics.mean(values) for name, values in samples.items()}


def server_lines(log: Path, offset: int) -> tuple[dict[str, list[float]], int]:
    """`bench-phase` records in the server log after byte `offset`, and the new offset."""
    data = log.read_bytes()
    found: dict[str, list[float]] = defaultdict(list)
    for match in _LINE.finditer(data, offset):
        found[match.group(1).decode()].append(float(match.group(2)))
    return found, len(data)


def start_timed_server(
    data_dir: Path, port: int, admin_key: str, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    import os

    env = {**os.environ, "POLLEN_ADMIN_API_KEY": admin_key, **extra_env}
    log = (data_dir / "server.log").open("ab")
    cmd = [sys.executable, "-m", "bench.phases", "serve", "--data-dir", str(data_dir),
           "--port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _serve(argv: list[str]) -> None:
    import logging

    import market.__main__ as entry
    from market.services import rounds, submissions

    log = logging.getLogger("bench.phases")

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            tick = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                log.info("bench-phase %s %.6f", name, time.perf_counter() - tick)

        return inner

    from crypto.aggregate import Accumulator
    from market.services import partials

    # An upload's own check (its header, hash and ciphertexts, read from its file).
    submissions.check_envelope_file = timed("validate", submissions.check_envelope_file)
    # Every ciphertext addition: into a process's partial sum, a group's sum, at the close.
    Accumulator.add = timed("add", Accumulator.add)  # type: ignore[method-assign]
    Accumulator.merge = timed("add", Accumulator.merge)  # type: ignore[method-assign]
    # A stored envelope checked again before it is added (a group's sum, the close).
    partials.check_envelope_file = timed("replay", partials.check_envelope_file)
    submissions.submit = timed("submit", submissions.submit)
    rounds.close_round = timed("close", rounds.close_round)
    sys.argv = ["market", *argv]
    entry.main()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(sys.argv[2:])
