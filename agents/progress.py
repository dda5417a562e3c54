"""What `pollen job run` and `pollen agent run` show while they work.

The buyer and the provider agent report progress through small hooks (`RoundStatus` for a
collecting round, `AgentProgress` for an agent's training, encryption and upload); this module
turns those events into output people can read:

- on a terminal, a live rich display: "round 3/10: 2 of 4 updates in, deadline in 4:12"
  with its countdown ticking, and a bar per training run, encryption and upload;
- anywhere else (CI logs, pipes, files), one plain line per event and no ANSI codes: a
  collecting round is written again only when its count of updates changes.

Nothing here talks to the server: the hooks are called by `agents.buyer` and
`agents.provider`, which stay free of any display code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from agents.training import EpochInfo
from dataspec.views import RoundPublic

__all__ = [
    "AgentProgress",
    "LiveAgentProgress",
    "LiveRoundWatch",
    "NullAgentProgress",
    "PlainAgentProgress",
    "PlainRoundWatch",
    "RoundStatus",
    "agent_progress",
    "countdown",
    "round_watch",
    "steps_of",
]

Say = Callable[[str], None]


def countdown(seconds: float) -> str:
    """A remaining time as m:ss (h:mm:ss past an hour), never negative."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _utc(value: str | datetime) -> datetime:
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    # The server writes UTC; SQLite hands it back without an offset.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RoundStatus:
    """A collecting round as the buyer sees it: how many updates are in, until when."""

    round: int
    rounds_total: int
    attempt: int
    submitted: int
    expected: int
    deadline: datetime

    @classmethod
    def from_round(cls, rnd: RoundPublic, rounds_total: int) -> RoundStatus:
        """From the server's view of a round (`GET /v1/jobs/{id}/rounds/{n}`)."""
        return cls(
            round=rnd.round,
            rounds_total=rounds_total,
            attempt=rnd.attempt,
            submitted=rnd.submitted,
            expected=rnd.expected_count,
            deadline=_utc(rnd.deadline),
        )

    def head(self) -> str:
        retry = f" (attempt {self.attempt})" if self.attempt > 1 else ""
        return f"round {self.round}/{self.rounds_total}{retry}"

    def until_deadline(self, now: datetime | None = None) -> str:
        left = (self.deadline - (now or datetime.now(UTC))).total_seconds()
        return f"deadline in {countdown(left)}" if left > 0 else "deadline passed, closing"

    def describe(self, now: datetime | None = None) -> str:
        """'round 3/10: 2 of 4 updates in, deadline in 4:12'."""
        return (
            f"{self.head()}: {self.submitted} of {self.expected} updates in, "
            f"{self.until_deadline(now)}"
        )


class RoundWatch(Protocol):
    """Shows the buyer's collecting round; `closed` once its metrics are printed."""

    def collecting(self, status: RoundStatus) -> None: ...

    def closed(self) -> None: ...


class PlainRoundWatch:
    """One line each time a round starts collecting or its count of updates changes."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self._last: tuple[int, int, int, int] | None = None

    def collecting(self, status: RoundStatus) -> None:
        key = (status.round, status.attempt, status.submitted, status.expected)
        if key != self._last:
            self._last = key
            self.say(status.describe())

    def closed(self) -> None:
        self._last = None


class _Deadline(ProgressColumn):
    """The live countdown of the task's round, recomputed at every refresh."""

    def render(self, task: Task) -> Text:
        status: RoundStatus | None = task.fields.get("status")
        return Text(status.until_deadline() if status is not None else "")


class LiveRoundWatch:
    """A live line with a bar of updates in and the deadline counting down (terminal only)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._task: TaskID | None = None

    @staticmethod
    def display(console: Console) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} of {task.total} updates in,"),
            _Deadline(),
            console=console,
            refresh_per_second=2,
        )

    def collecting(self, status: RoundStatus) -> None:
        if self._task is None:
            self._task = self.progress.add_task(status.head(), total=status.expected)
        self.progress.update(
            self._task,
            description=status.head(),
            completed=status.submitted,
            total=status.expected,
            status=status,
            visible=True,
        )

    def closed(self) -> None:
        if self._task is not None:
            self.progress.update(self._task, visible=False)


@contextmanager
def round_watch(console: Console, say: Say, *, live: bool) -> Iterator[RoundWatch]:
    """The watch for `job run`: live on a terminal (unless `live` is False), else plain."""
    if not (live and console.is_terminal):
        yield PlainRoundWatch(say)
        return
    with LiveRoundWatch.display(console) as progress:
        yield LiveRoundWatch(progress)


# ------------------------------------------------------------------------------- the agent


class AgentProgress(Protocol):
    """What the provider agent reports about one round's work, in order: training (with an
    `epoch` after each local epoch), then encryption, then upload. `*_done` closes a step
    that succeeded; `abandoned` a step that stopped with an error."""

    def training(self, job_id: str, number: int, *, epochs: int, samples: int) -> None: ...

    def epoch(self, job_id: str, number: int, info: EpochInfo) -> None: ...

    def encrypting(self, job_id: str, number: int, *, params: int) -> None: ...

    def encrypted(self, job_id: str, number: int, *, size: int) -> None: ...

    def uploading(self, job_id: str, number: int, *, size: int) -> None: ...

    def uploaded(self, job_id: str, number: int, *, size: int) -> None: ...

    def abandoned(self, job_id: str, number: int) -> None: ...


class NullAgentProgress:
    """Reports nothing (the library default)."""

    def training(self, job_id: str, number: int, *, epochs: int, samples: int) -> None:
        pass

    def epoch(self, job_id: str, number: int, info: EpochInfo) -> None:
        pass

    def encrypting(self, job_id: str, number: int, *, params: int) -> None:
        pass

    def encrypted(self, job_id: str, number: int, *, size: int) -> None:
        pass

    def uploading(self, job_id: str, number: int, *, size: int) -> None:
        pass

    def uploaded(self, job_id: str, number: int, *, size: int) -> None:
        pass

    def abandoned(self, job_id: str, number: int) -> None:
        pass


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


class _Clock:
    """When each (job, round, step) started, to say how long it took."""

    def __init__(self) -> None:
        self._started: dict[tuple[str, int, str], float] = {}

    def start(self, job_id: str, number: int, step: str) -> None:
        self._started[(job_id, number, step)] = time.perf_counter()

    def took(self, job_id: str, number: int, step: str) -> float:
        started = self._started.pop((job_id, number, step), None)
        return 0.0 if started is None else time.perf_counter() - started


class PlainAgentProgress:
    """One line per event: 'job J round 3: epoch 2/5, loss 0.4123', 'uploaded 0.52 MB in
    0.10 s'. Training's start is already said by the agent's own notes."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self._clock = _Clock()

    def _line(self, job_id: str, number: int, text: str) -> None:
        self.say(f"job {job_id} round {number}: {text}")

    def training(self, job_id: str, number: int, *, epochs: int, samples: int) -> None:
        self._clock.start(job_id, number, "train")

    def epoch(self, job_id: str, number: int, info: EpochInfo) -> None:
        self._line(job_id, number, f"epoch {info.epoch}/{info.epochs}, loss {info.loss:.4f}")

    def encrypting(self, job_id: str, number: int, *, params: int) -> None:
        self._clock.start(job_id, number, "encrypt")
        self._line(job_id, number, f"encrypting {params} parameters")

    def encrypted(self, job_id: str, number: int, *, size: int) -> None:
        took = self._clock.took(job_id, number, "encrypt")
        self._line(job_id, number, f"encrypted in {took:.2f} s ({_mb(size)})")

    def uploading(self, job_id: str, number: int, *, size: int) -> None:
        self._clock.start(job_id, number, "upload")
        self._line(job_id, number, f"uploading {_mb(size)}")

    def uploaded(self, job_id: str, number: int, *, size: int) -> None:
        took = self._clock.took(job_id, number, "upload")
        self._line(job_id, number, f"uploaded {_mb(size)} in {took:.2f} s")

    def abandoned(self, job_id: str, number: int) -> None:
        for step in ("train", "encrypt", "upload"):
            self._clock.took(job_id, number, step)


class LiveAgentProgress:
    """Bars on a terminal: the epochs of a training run, then encryption and upload (each a
    pulsing bar while it lasts); a line stays in the scrollback when each step ends."""

    def __init__(self, progress: Progress, say: Say) -> None:
        self.progress = progress
        self.say = say
        self._tasks: dict[tuple[str, int, str], TaskID] = {}
        self._clock = _Clock()

    @staticmethod
    def display(console: Console) -> Progress:
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def _start(self, job_id: str, number: int, step: str, what: str, total: int | None) -> None:
        self._end(job_id, number, step, None)  # a step retried replaces its bar
        self._clock.start(job_id, number, step)
        key = (job_id, number, step)
        self._tasks[key] = self.progress.add_task(
            escape(f"job {job_id} round {number}: {what}"), total=total, note=""
        )

    def _end(self, job_id: str, number: int, step: str, line: str | None) -> None:
        task = self._tasks.pop((job_id, number, step), None)
        took = self._clock.took(job_id, number, step)
        if task is not None:
            self.progress.remove_task(task)
        if line is not None:
            self.say(f"job {job_id} round {number}: {line.format(took=took)}")

    def training(self, job_id: str, number: int, *, epochs: int, samples: int) -> None:
        self._start(job_id, number, "train", f"training on {samples} samples", epochs)

    def epoch(self, job_id: str, number: int, info: EpochInfo) -> None:
        task = self._tasks.get((job_id, number, "train"))
        if task is not None:
            self.progress.update(task, completed=info.epoch, note=f"loss {info.loss:.4f}")
        if info.epoch >= info.epochs:
            self._end(job_id, number, "train", f"trained {info.epochs} epochs in {{took:.1f}} s")

    def encrypting(self, job_id: str, number: int, *, params: int) -> None:
        self._start(job_id, number, "encrypt", f"encrypting {params} parameters", None)

    def encrypted(self, job_id: str, number: int, *, size: int) -> None:
        self._end(job_id, number, "encrypt", f"encrypted in {{took:.2f}} s ({_mb(size)})")

    def uploading(self, job_id: str, number: int, *, size: int) -> None:
        self._start(job_id, number, "upload", f"uploading {_mb(size)}", None)

    def uploaded(self, job_id: str, number: int, *, size: int) -> None:
        self._end(job_id, number, "upload", f"uploaded {_mb(size)} in {{took:.2f}} s")

    def abandoned(self, job_id: str, number: int) -> None:
        for step in ("train", "encrypt", "upload"):
            self._end(job_id, number, step, None)


@contextmanager
def steps_of(progress: AgentProgress, job_id: str, number: int) -> Iterator[None]:
    """Close the round's open steps on `progress` if the block raises (then re-raise)."""
    try:
        yield
    except BaseException:
        progress.abandoned(job_id, number)
        raise


@contextmanager
def agent_progress(console: Console, say: Say, *, live: bool) -> Iterator[AgentProgress]:
    """The agent's progress display: bars on a terminal (unless `live` is False), else
    one line per event."""
    if not (live and console.is_terminal):
        yield PlainAgentProgress(say)
        return
    with LiveAgentProgress.display(console) as progress:
        yield LiveAgentProgress(progress, say)
