"""What `job run` and `agent run` draw: plain lines off a terminal, live bars on one."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

from rich.console import Console

from agents.progress import (
    PlainAgentProgress,
    PlainRoundWatch,
    RoundStatus,
    agent_progress,
    countdown,
    round_watch,
)
from agents.training import EpochInfo
from dataspec.views import RoundPublic

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def live(left_s: float) -> RoundStatus:
    return RoundStatus(3, 10, 1, 2, 4, datetime.now(UTC) + timedelta(seconds=left_s))


def status(submitted: int, left_s: float = 252, attempt: int = 1) -> RoundStatus:
    return RoundStatus(3, 10, attempt, submitted, 4, NOW + timedelta(seconds=left_s))


def test_status_line_reads_round_updates_and_deadline() -> None:
    """'round 3/10: 2 of 4 updates in, deadline in 4:12'; a passed deadline says so."""
    assert status(2).describe(NOW) == "round 3/10: 2 of 4 updates in, deadline in 4:12"
    assert status(2, -3).describe(NOW).endswith("deadline passed, closing")
    assert status(0, attempt=2).describe(NOW).startswith("round 3/10 (attempt 2): 0 of 4")
    assert countdown(3 * 3600 + 62) == "3:01:02" and countdown(-5) == "0:00"


def test_status_reads_the_servers_round() -> None:
    """A round as the API returns it (naive UTC deadline from SQLite) becomes a status."""
    rnd = RoundPublic.model_validate({
        "job_id": "job_1", "round": 2, "state": "collecting", "attempt": 1,
        "deadline": "2026-01-01T12:01:05", "expected_count": 3, "expected_providers": [],
        "submitted": 1, "included": [], "you_submitted": None, "weight_norm": 300,
        "param_count": 10, "quorum": 2, "summands": 3, "metrics": None, "close_reason": None,
    })  # fmt: skip
    assert RoundStatus.from_round(rnd, 5).describe(NOW) == (
        "round 2/5: 1 of 3 updates in, deadline in 1:05"
    )


def test_plain_watch_writes_a_line_only_when_the_count_changes() -> None:
    """Off a terminal a poll that changes nothing writes nothing (no log flooding)."""
    lines: list[str] = []
    watch = PlainRoundWatch(lines.append)
    for s in (status(0), status(0, 200), status(1), status(1), status(2)):
        watch.collecting(s)
    assert [line.split(",")[0] for line in lines] == [
        "round 3/10: 0 of 4 updates in",
        "round 3/10: 1 of 4 updates in",
        "round 3/10: 2 of 4 updates in",
    ]


def test_pipes_get_plain_lines_and_terminals_live_bars() -> None:
    """A non-terminal console gets no escape codes; a terminal gets the live bar and text."""
    piped = io.StringIO()
    plain = Console(file=piped, force_terminal=False, soft_wrap=True)
    with round_watch(plain, plain.print, live=True) as watch:
        watch.collecting(live(100))
    assert "\x1b" not in piped.getvalue() and "2 of 4 updates in" in piped.getvalue()
    tty = io.StringIO()
    term = Console(file=tty, force_terminal=True, width=120)
    with round_watch(term, term.print, live=True) as watch:
        watch.collecting(live(100))
    out = tty.getvalue()
    assert "\x1b[" in out
    out = ANSI.sub("", out)
    assert "round 3/10" in out and "2 of 4 updates in" in out
    assert "deadline in 1:" in out
    forced = io.StringIO()
    term = Console(file=forced, force_terminal=True, width=120)
    with round_watch(term, term.print, live=False) as watch:  # --no-progress
        watch.collecting(live(100))
    assert "round 3/10: 2 of 4 updates in, deadline in 1:" in ANSI.sub("", forced.getvalue())


def test_agent_steps_are_one_line_each_off_a_terminal() -> None:
    """Epochs, encryption and upload each write a line naming the job and round."""
    lines: list[str] = []
    p = PlainAgentProgress(lines.append)
    p.training("job_1", 2, epochs=2, samples=50)
    for e in (1, 2):
        p.epoch("job_1", 2, EpochInfo(epoch=e, epochs=2, loss=0.5 / e, samples=50))
    p.encrypting("job_1", 2, params=650)
    p.encrypted("job_1", 2, size=520_000)
    p.uploading("job_1", 2, size=520_000)
    p.uploaded("job_1", 2, size=520_000)
    assert [line.split(" in ")[0] for line in lines] == [
        "job job_1 round 2: epoch 1/2, loss 0.5000",
        "job job_1 round 2: epoch 2/2, loss 0.2500",
        "job job_1 round 2: encrypting 650 parameters",
        "job job_1 round 2: encrypted",
        "job job_1 round 2: uploading 0.52 MB",
        "job job_1 round 2: uploaded 0.52 MB",
    ]


def test_agent_bars_on_a_terminal_leave_a_line_per_finished_step() -> None:
    """Live: bars while a step runs, then one line per step in the scrollback."""
    tty = io.StringIO()
    term = Console(file=tty, force_terminal=True, width=120)
    with agent_progress(term, term.print, live=True) as p:
        p.training("job_1", 1, epochs=2, samples=50)
        p.epoch("job_1", 1, EpochInfo(epoch=1, epochs=2, loss=0.5, samples=50))
        p.epoch("job_1", 1, EpochInfo(epoch=2, epochs=2, loss=0.25, samples=50))
        p.encrypting("job_1", 1, params=650)
        p.encrypted("job_1", 1, size=520_000)
        p.uploading("job_1", 1, size=520_000)
        p.abandoned("job_1", 1)  # the server went away mid-upload: no bar is left behind
        assert not p.progress.tasks  # type: ignore[attr-defined]
    out = ANSI.sub("", tty.getvalue())
    assert "trained 2 epochs in" in out and "encrypted in" in out and "uploaded" not in out
