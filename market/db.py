"""Database engine and sessions.

SQLite (the embedded default) gets WAL journaling, enforced foreign keys and a busy timeout so
API threads and the deadline task can share one file; PostgreSQL is reached through psycopg 3.

SQLite serves **one server process**: decisions on a job are serialized by a lock in the
process and, on PostgreSQL, by row locks (`SELECT ... FOR UPDATE`), which SQLite does not
have. A server process holds an exclusive `flock` on `<database>.server-lock` while it runs
(`SqliteProcessClaim`), so a second process on the same file refuses to start with a clear
message instead of silently losing updates; `pollen server --workers N` refuses N > 1 on
SQLite before starting any. Several workers need PostgreSQL.

Both use a pool of `POOL_CAPACITY` connections. A request whose session holds a connection
while it awaits something (another thread hop, a request body) can starve the pool: once
every API thread is blocked waiting for a connection and every connection belongs to a
request waiting for a thread, nothing moves until the pool's 30 s timeout fails them all.
Routes that await with a session open take a `ConnectionTurn` first (at most half the pool).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import InvalidatePoolError
from sqlmodel import Session, create_engine

from market.errors import DatabaseInUseError

log = logging.getLogger(__name__)

SQLITE_ONE_PROCESS = (
    "SQLite serves one server process: its writes cannot be locked across processes. "
    "Run one worker, or use PostgreSQL (POLLEN_DATABASE_URL / --database-url) for several."
)

POOL_SIZE = 10
POOL_OVERFLOW = 10
POOL_CAPACITY = POOL_SIZE + POOL_OVERFLOW
# A pooled PostgreSQL connection unused for longer is checked before a session gets it.
PING_AFTER_IDLE_S = 2.0

T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Pin PostgreSQL URLs to the psycopg 3 driver, the only one installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """Create an engine configured for the backend the URL names."""
    url = normalize_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool: dict[str, Any] = {}
        if path and path != ":memory:":
            pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Every connection stays open once made: an overflow connection is closed when handed
    # back, and under a burst of uploads that churn cost PostgreSQL a new backend (fork,
    # authentication, cold catalog caches) every other upload.
    engine = create_engine(url, pool_size=POOL_CAPACITY, max_overflow=0)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for more than `PING_AFTER_IDLE_S` is pinged when taken
    from the pool, and a dead one (the server restarted, a proxy cut it) is replaced, with
    every connection older than it, before the session sees it.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: an upload takes a connection
    about six times, so that was six round trips per upload, and as many statements for
    PostgreSQL, while no connection had been idle for more than a few milliseconds."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _alive(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool discards it and every connection made before it, then connects anew.
            raise InvalidatePoolError(f"pooled connection is dead: {exc}") from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class AdvisoryLock(IntEnum):
    """PostgreSQL advisory-lock keys, one per thing serialized, all named here.

    Two users of one key serialize against each other by accident (the ledger and matching
    once shared 0x706F6C6C656E, so every settlement stalled matching and the reverse).
    """

    LEDGER = 0x706F6C6C656E  # "pollen": appends to the journal's hash chain
    MATCHING = 0x706F6C6C6D61  # "pollma": matching passes
    MIGRATION = 0x706F6C6C6D69  # "pollmi": Alembic upgrades at startup
    PAYOUT_RUN = 0x706F6C6C7061  # "pollpa": payout runs (session-level, across commits)


def advisory_xact_lock(session: Session, key: AdvisoryLock) -> None:
    """Take `key` until the session's transaction ends (PostgreSQL only; a no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(key)})


_UNIT_OF_WORK = "pollen.unit_of_work"


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """One service call's writes as one transaction: committed once when the block ends,
    rolled back if it raises.

    The entry points (the services routes call, the deadline pass) open it; the helpers
    they call leave committing to it. A block opened inside another joins the outer one,
    so an entry point may call another: only the outermost commits or rolls back. The few
    commits made elsewhere are load-bearing (a lock's fresh snapshot, a matching pass, a
    decision that stands although the request is refused, a step before a call to Stripe)
    and say why where they are made.

    A job's lock (`market.services.locks.locked_job`) is taken outside the block, as in
    `with locked_job(session, job_id) as job, unit_of_work(session):`, so the decision is
    committed before the lock is released.
    """
    if session.info.get(_UNIT_OF_WORK):
        yield session
        return
    session.info[_UNIT_OF_WORK] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_UNIT_OF_WORK, None)


def in_unit_of_work(session: Session) -> bool:
    """Whether a `unit_of_work` block is open on `session`."""
    return bool(session.info.get(_UNIT_OF_WORK))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session for background work; callers commit explicitly."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


class PerLoop(Generic[T]):
    """One `make()` per running event loop: anyio primitives belong to the loop that made
    them (one per server process; tests start several, one after another)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._guard = threading.Lock()
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """This loop's instance (call from the event loop)."""
        loop = asyncio.get_running_loop()
        with self._guard:
            item = self._items.get(loop)
            if item is None:
                item = self._items[loop] = self._make()
            return item


def sqlite_path(url: str) -> Path | None:
    """The database file a SQLite URL names (None for memory or another backend)."""
    if not is_sqlite(url):
        return None
    path = normalize_url(url).split("///", 1)[-1]
    return None if not path or path == ":memory:" else Path(path).resolve()


class SqliteProcessClaim:
    """This process's exclusive claim on a SQLite database file, shared by the apps it runs.

    Several apps in one process (tests) share in-process locks, so they may share the claim;
    another process may not.
    """

    _guard = threading.Lock()
    _held: dict[Path, tuple[int, int]] = {}  # path -> (fd, apps holding it)

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)

    def acquire(self) -> None:
        if self.path is None:
            return
        with self._guard:
            fd, users = self._held.get(self.path, (-1, 0))
            if users == 0:
                lock_file = self.path.with_name(self.path.name + ".server-lock")
                lock_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise DatabaseInUseError(
                        f"another server process is running on {self.path}. " + SQLITE_ONE_PROCESS
                    ) from None
            self._held[self.path] = (fd, users + 1)

    def release(self) -> None:
        if self.path is None:
            return
        with self._guard:
            fd, users = self._held.get(self.path, (-1, 0))
            if users <= 1:
                self._held.pop(self.path, None)
                if fd >= 0:
                    os.close(fd)  # closing the descriptor drops the flock
            else:
                self._held[self.path] = (fd, users - 1)


_turns = PerLoop(lambda: anyio.Semaphore(POOL_CAPACITY // 2))


class ConnectionTurn:
    """Leave to hold a pooled connection across awaits; half the pool is handed out."""

    def __init__(self) -> None:
        self._turns = _turns.get()
        self._held = False

    async def acquire(self) -> None:
        await self._turns.acquire()
        self._held = True

    def release(self) -> None:
        """Give the turn back (idempotent) once the session released its connection."""
        if self._held:
            self._held = False
            self._turns.release()
