"""Real processes on loopback: the server under uvicorn, agents as subprocesses."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.processes import free_port, start_server, stop, wait_ready
from tests.utils import postgres


@dataclass
class LiveServer:
    url: str
    admin_key: str
    data_dir: Path
    database_url: str | None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """The marketplace as a real uvicorn process on a free port, on SQLite or PostgreSQL."""
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    env: dict[str, str] = {"POLLEN_DEADLINE_TICK_S": "0.5", "POLLEN_MIN_ROUND_DEADLINE_S": "1"}
    database_url = None
    name = None
    if request.param == "postgres":
        pg: str = request.getfixturevalue("pg_server")
        name = f"pollen_e2e_{uuid.uuid4().hex[:10]}"
        database_url = postgres.create_database(pg, name)
        env["POLLEN_DATABASE_URL"] = database_url
    port = free_port()
    admin_key = secrets.token_urlsafe(16)
    proc = start_server(data_dir, port, admin_key, extra_env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield LiveServer(f"http://127.0.0.1:{port}", admin_key, data_dir, database_url)
    finally:
        stop(proc)
        if name is not None:
            postgres.drop_database(request.getfixturevalue("pg_server"), name)
