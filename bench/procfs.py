"""What a server's processes use, read from /proc while a benchmark drives them.

`RssSampler` samples the resident memory of a process (and, for `--workers N`, of its worker
processes) while a burst runs; `write_bytes` sums what processes wrote to storage. Used by
the load and scale benchmarks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


class RssSampler:
    """Samples a process's resident memory from /proc while a burst runs."""

    def __init__(self, pid: int, period_s: float = 0.01, *, children: bool = False) -> None:
        """`children`: the server is a supervisor of worker processes; count them all."""
        self.pid, self.period_s, self.children = pid, period_s, children
        self.max_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pids(self) -> list[int]:
        """The process and, with `children`, every process below it."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            if self.children:
                for task in Path(f"/proc/{pid}/task").glob("*/children"):
                    try:
                        todo.extend(int(c) for c in task.read_text().split())
                    except FileNotFoundError:  # a thread that just ended
                        continue
        return pids

    @staticmethod
    def _one_kb(pid: int, field: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except FileNotFoundError:  # a worker that just exited
            return 0
        raise RuntimeError(f"no {field} for pid {pid}")

    def status_kb(self, field: str) -> int:
        """`field` of /proc/PID/status, summed over the server's processes."""
        return sum(self._one_kb(pid, field) for pid in self.pids())

    def _run(self) -> None:
        # The process tree is walked once a second, not on every sample: with worker
        # processes of a few dozen threads each, walking it every 10 ms cost the benchmark
        # more CPU than the readings, on the cores the server runs on.
        pids, walked = self.pids(), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - walked > 1.0:
                pids, walked = self.pids(), time.monotonic()
            rss = sum(self._one_kb(pid, "VmRSS") for pid in pids)
            self.max_rss_kb = max(self.max_rss_kb, rss)
            self._stop.wait(self.period_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_bytes(pids: tuple[int, ...]) -> int:
    """Bytes `pids` (the blob server's, or any) wrote to storage, from /proc/PID/io: less
    what they deleted before it reached the disk (an upload's buffer file, read and removed
    within the request), which the kernel counts as written and then as cancelled."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
                elif line.startswith("cancelled_write_bytes:"):
                    total -= int(line.split()[1])
        except (FileNotFoundError, PermissionError):
            continue
    return total
