"""A throwaway PostgreSQL cluster for the tests and the benchmarks, from the machine's own
binaries.

`initdb` refuses to run as root, so when the tests run as root the cluster is created and
started as the `postgres` system user (`runuser`), in a temp folder owned by it. Durability is
switched off: the cluster lives for one test session or one benchmark run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("POLLEN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a cluster on a free loopback port; yields a superuser URL to its `postgres` db."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN}; set POLLEN_TEST_PG_URL")
    root = Path(tempfile.mkdtemp(prefix="pollen-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    subprocess.run(
        _as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync", "--no-instructions"]),
        check=True, capture_output=True,
    )  # fmt: skip
    opts = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                   "-l", str(root / "server.log"), "-w", "-t", "60", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def with_database(server_url: str, name: str) -> str:
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """CREATE DATABASE (from a template if given); returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')  # type: ignore[arg-type]
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
