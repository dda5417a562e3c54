"""`serve` runs the real app under uvicorn on loopback, with a fresh data directory."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from market.workers import STARTUP_TRIES, Supervisor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_process_serves_the_api(tmp_path: Path) -> None:
    """A fresh data dir comes up migrated; /docs and the API answer over real HTTP."""
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "market", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/docs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.post(f"{base}/v1/accounts", json={"role": "provider", "name": "p"}, timeout=5)
        assert r.status_code == 201
        assert (tmp_path / "data" / "pollen.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_sqlite_serves_one_process_and_says_so(tmp_path: Path) -> None:
    """SQLite cannot lock rows across processes: `--workers 2` on it is refused before any
    worker starts, and a second server on a SQLite file already served exits, naming why."""
    data = str(tmp_path / "data")
    refused = subprocess.run(
        [sys.executable, "-m", "market", "--data-dir", data, "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--workers 2 needs PostgreSQL" in refused.stderr
    port = _free_port()
    first = subprocess.Popen(
        [sys.executable, "-m", "market", "--data-dir", data, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "market", "--data-dir", data, "--port", str(_free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0
        assert "another server process is running on" in second.stderr
        assert "use PostgreSQL" in second.stderr
        assert first.poll() is None  # the first one keeps serving
    finally:
        first.terminate()
        first.wait(timeout=10)


@pytest.mark.postgres
def test_workers_starting_together_share_one_admin_account(
    pg_template: str, pg_server: str
) -> None:
    """Workers on a fresh database each make sure the admin account exists, at the same time:
    the one whose insert loses the race finds the winner's account instead of failing its
    start (which stopped the whole `--workers` server: every connection then refused)."""
    import threading
    import uuid

    from sqlmodel import Session, select

    from market.db import make_engine
    from market.models import Account
    from market.services.accounts import ensure_admin, hash_key
    from tests.utils import postgres

    name = f"pollen_t_{uuid.uuid4().hex[:12]}"
    engine = make_engine(postgres.create_database(pg_server, name, template=pg_template))
    try:
        # The first worker's insert, flushed and not yet committed: the second's SELECT
        # cannot see it, so the second inserts too and waits on the unique key.
        first = Session(engine)
        winner = Account(id="adm_first", role="admin", name="operator", key_hash=hash_key("k"))
        first.add(winner)
        first.flush()
        seen: list[str | BaseException] = []

        def second() -> None:
            with Session(engine) as session:
                try:
                    seen.append(ensure_admin(session, "k").id)
                except BaseException as exc:
                    seen.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        first.commit()
        first.close()
        thread.join(10)
        with Session(engine) as session:
            admins = session.exec(select(Account).where(Account.role == "admin")).all()
        assert seen == ["adm_first"], seen
        assert [a.id for a in admins] == ["adm_first"]
    finally:
        engine.dispose()
        postgres.drop_database(pg_server, name)


def test_a_worker_that_keeps_failing_to_start_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers whose database refuses them: a failed start is tried again (a database busy
    for a moment), a failure that repeats stops the server with code 1 instead of
    restarting workers forever."""
    monkeypatch.setenv("POLLEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(
        "POLLEN_DATABASE_URL", f"postgresql+psycopg://pollen@127.0.0.1:{_free_port()}/x"
    )
    monkeypatch.setenv("POLLEN_ADMIN_API_KEY", "operator-key")  # needs the database at start
    caplog.set_level(logging.INFO, logger="market.workers")
    supervisor = Supervisor("127.0.0.1", _free_port(), 1, {"log_level": "warning"})
    assert supervisor.run() == 1
    started = [r for r in caplog.records if r.getMessage().startswith("started worker")]
    assert len(started) == STARTUP_TRIES
    assert not any(p.is_alive() for p in supervisor.processes)
