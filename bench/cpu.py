"""CPU seconds spent by each party of a benchmark, from /proc, so a run can tell who did the work.

`Roles` names the processes that matter (the server's, the load generator's own, the blob
server's, PostgreSQL's) and `snapshot` reads each one's user + system seconds. A process that
ends between two snapshots is counted through its parent's `cutime`/`cstime` once reaped (as
PostgreSQL's backends are, by the postmaster); `diff` of two snapshots gives the seconds spent
by each role in between, and `other` is what the rest of the machine spent meanwhile (other
people's tests on a shared machine), so a noisy run shows as one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float, float] | None:
    """(comm, parent pid, own seconds, reaped children's seconds) of `pid`, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields from `state` on: ppid is 2nd, utime 12th, stime 13th, cutime 14th, cstime 15th.
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / _TICK
    children = (int(fields[13]) + int(fields[14])) / _TICK
    return comm, ppid, own, children


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


@dataclass(frozen=True)
class Roles:
    """Which processes belong to whom: `server` lists the server's processes now (its
    supervisor and workers); the blob server's and the load generator's pids are fixed."""

    server: Callable[[], Iterable[int]]
    blob_server: tuple[int, ...] = ()
    generator: int = os.getpid()

    def of(self) -> dict[int, str]:
        roles = {pid: "server" for pid in self.server()}
        roles.update({pid: "blob_server" for pid in self.blob_server})
        roles[self.generator] = "load_generator"
        return roles


Snapshot = dict[str, float]


def snapshot(roles: Roles) -> Snapshot:
    """Seconds of CPU each role (and `other`, everything else) has used so far, plus the
    server's seconds per worker process as `server:PID`."""
    named = roles.of()
    out: Snapshot = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is None:
            continue
        comm, ppid, own, children = stat
        role = named.get(pid)
        if role is None:
            if not comm.startswith("postgres"):
                continue
            role = "postgres"
            if _stat_comm(ppid).startswith("postgres"):
                children = 0.0  # a backend's children are counted by the postmaster's cutime
        out[role] = out.get(role, 0.0) + own + children
        if role == "server":
            out[f"server:{pid}"] = own
    # The whole machine's busy seconds, less ours: what everything else used meanwhile.
    ours = sum(v for k, v in out.items() if ":" not in k)
    out["other"] = _machine_busy_s() - ours
    return out


def _machine_busy_s() -> float:
    """Seconds every core of the machine spent busy (not idle, not waiting) since boot."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / _TICK


def _stat_comm(pid: int) -> str:
    stat = _stat(pid)
    return stat[0] if stat else ""


def diff(before: Snapshot, after: Snapshot) -> Snapshot:
    """Seconds each role used between the two snapshots (per-worker keys as in `after`)."""
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
