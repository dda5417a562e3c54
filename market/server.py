"""Run the marketplace under uvicorn (what `pollen server` calls)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from market.app import create_app
from market.blobs import store_for
from market.config import Settings
from market.db import (
    SQLITE_ONE_PROCESS,
    SqliteProcessClaim,
    is_sqlite,
    make_engine,
    session_scope,
)
from market.errors import BlobStoreUnavailableError, DatabaseInUseError, InvalidInputError
from market.migrate import upgrade
from market.services.accounts import ensure_admin
from market.workers import Supervisor

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_LARGE_BUFFER = 128 * 1024


def return_large_buffers_to_the_os() -> bool:
    """Have glibc give every freed buffer of 128 KiB or more straight back to the system.

    Envelopes, their coefficients and the running sums are megabytes each. By default glibc
    raises its mmap threshold once such a buffer is freed, and from then on keeps freed
    megabytes in the arena of whichever thread freed them, so resident memory grows with the
    number of threads that ever parsed an envelope instead of with the model. Measured with
    `python -m bench load` (100 concurrent 2.9 MB envelopes): peak RSS 181 MB above the idle
    server by default, 49 MB with this fixed threshold (which also turns the adjustment off).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _LARGE_BUFFER))
    except (OSError, AttributeError):  # not glibc
        return False


def _proxy_options(settings: Settings) -> dict[str, Any]:
    """`X-Forwarded-*` believed only from `trusted_proxies`.

    uvicorn's own default believes `X-Forwarded-For` from 127.0.0.1, so any local client
    (or a proxy on loopback passing client headers through) chose the address it is
    counted under: rotating the header escaped the failed-key limit, spoofing the admin's
    address put it over. With no trusted proxy the headers are ignored altogether.
    """
    trusted = settings.trusted_proxy_list
    return {
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": ",".join(trusted) if trusted else "",
    }


# The process id tells the lines of `--workers N` processes apart in the one log.
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """The marketplace's own lines at INFO and above, on stderr (`server.log` under `pollen
    server`): in the serving process and in every worker it spawns, which starts with no
    handler at all (a spawned process inherits none) and would drop its INFO lines."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """How uvicorn runs one app process (see `_proxy_options`)."""
    return uvicorn.Config(app, host=host, port=port, log_level="info", **_proxy_options(settings))


def _check_and_claim(settings: Settings, workers: int) -> None:
    """Stop, in one line, on a setup that cannot run; else hold the SQLite file until exit."""
    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    if workers > 1 and is_sqlite(settings.database_url):
        raise SystemExit(f"--workers {workers} needs PostgreSQL. {SQLITE_ONE_PROCESS}")
    try:
        store_for(settings)  # an absent bucket or refused credentials stop us here, in one line
    except BlobStoreUnavailableError as exc:
        raise SystemExit(str(exc)) from None
    claim = SqliteProcessClaim(settings.database_url)
    try:
        claim.acquire()  # held until this process exits (the app's own claim nests in it)
    except DatabaseInUseError as exc:
        raise SystemExit(exc.message) from None


def serve(
    *,
    data_dir: str,
    host: str,
    port: int,
    database_url: str | None = None,
    workers: int = 1,
) -> None:
    """Serve the API on host:port with data (SQLite file, blobs) under `data_dir`.

    With `workers` > 1, that many processes, each accepting on its own socket
    (`market.workers`).
    """
    overrides: dict[str, object] = {"data_dir": Path(data_dir)}
    if database_url:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging()
    if not return_large_buffers_to_the_os():
        log.info("could not set the allocator's mmap threshold; large buffers may linger")
    _check_and_claim(settings, workers)
    if settings.auto_migrate or settings.admin_api_key:
        # Once, here, before any worker starts: the workers then find the schema at head
        # and the admin account in place.
        engine = make_engine(settings.database_url)
        try:
            if settings.auto_migrate:
                upgrade(engine)
            if settings.admin_api_key:
                with session_scope(engine) as session:
                    ensure_admin(session, settings.admin_api_key)
        except InvalidInputError as exc:
            raise SystemExit(f"POLLEN_ADMIN_API_KEY: {exc.message}") from None
        finally:
            engine.dispose()
    if workers == 1:
        uvicorn.Server(uvicorn_config(create_app(settings), settings, host=host, port=port)).run()
        return
    # Each worker builds its app from the environment (`market.app:create_app`).
    os.environ["POLLEN_DATA_DIR"] = str(settings.data_dir)
    os.environ["POLLEN_DATABASE_URL"] = settings.database_url
    options = {"log_level": "info", **_proxy_options(settings)}
    code = Supervisor(host, port, workers, options).run()
    if code:
        raise SystemExit(code)
