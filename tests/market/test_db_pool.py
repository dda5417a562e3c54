"""The PostgreSQL pool: dead connections are replaced unseen, live ones are not pinged.

A connection the server dropped while it sat in the pool (PostgreSQL restarted, a proxy cut
it) must not reach a session; and a connection in steady use must not cost a round trip
per checkout (an upload takes one about six times)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, event, text

from market import db
from market.db import make_engine
from tests.utils import postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_db(pg_server: str) -> Iterator[str]:
    name = f"pollen_pool_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(pg_server, name)
    postgres.drop_database(pg_server, name)


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_dropped_while_idle_is_replaced(
    pg_server: str, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    engine = make_engine(pg_db)
    try:
        first = _backend_pid(engine)
        # The server ends that backend while the connection sits in the pool.
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # The next session gets a live connection, not the dead one's error.
        second = _backend_pid(engine)
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged(pg_db: str) -> None:
    engine = make_engine(pg_db)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: pings.append(conn) or real_ping(conn)  # type: ignore[method-assign]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        for _ in range(20):
            _backend_pid(engine)
        assert len(statements) == 20
        assert pings == []
    finally:
        engine.dispose()


def test_a_connection_idle_past_the_threshold_is_pinged(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    engine = make_engine(pg_db)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: pings.append(conn) or real_ping(conn)  # type: ignore[method-assign]
    try:
        for _ in range(3):
            _backend_pid(engine)
        assert len(pings) == 2  # not the fresh connection, each reuse after it
    finally:
        engine.dispose()
