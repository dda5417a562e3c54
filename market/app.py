"""The FastAPI application factory.

`create_app(settings)` wires settings, engine, blob store and routes. At startup the lifespan
applies migrations (a fresh data directory just works), ensures the configured admin account,
and starts the deadline enforcer: a background task running `rounds.tick` every
`deadline_tick_s` seconds, so rounds close and offers expire even when nobody calls the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from market import problems, ui
from market.api.routes import (
    accounts,
    admin,
    jobs,
    listings,
    money,
    offers,
    privacy,
    rounds,
    translog,
)
from market.blobs import store_for
from market.config import Settings
from market.db import SqliteProcessClaim, make_engine, session_scope
from market.migrate import upgrade
from market.models.types import utcnow
from market.payments import PaymentRail, rail_for
from market.services import accounts as account_service
from market.services import partials, reputation, verification
from market.services import payments as payment_service
from market.services import rounds as round_service
from market.translog import install

log = logging.getLogger(__name__)


def run_tick(engine: Engine, now: datetime, rail: PaymentRail | None = None) -> int:
    """One pass of the deadline enforcer in its own session; then queued refunds go out."""
    with session_scope(engine) as session:
        moved = round_service.tick(session, now=now)
        if rail is not None:
            payment_service.process_refunds(session, rail, now=now)
        return moved


async def _enforce_deadlines(app: FastAPI, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            await run_in_threadpool(run_tick, app.state.engine, app.state.clock(), app.state.rail)
        except Exception:  # keep enforcing: one bad pass must not stop the task
            log.exception("deadline pass failed")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    claim = SqliteProcessClaim(settings.database_url)
    claim.acquire()  # a second server process on one SQLite file stops here, with why
    if settings.auto_migrate:
        await run_in_threadpool(upgrade, engine)
    # Uploads cut off by a crash of this server: their bodies never became blobs.
    swept = app.state.blobs.sweep_temp(older_than_s=max(600.0, 2 * settings.upload_idle_timeout_s))
    if swept:
        log.info("removed %d upload(s) left behind by an earlier process", swept)
    dropped = await run_in_threadpool(app.state.blobs.sweep_envelopes)
    if dropped:
        log.info("deleted %d envelope(s) kept by an earlier version; their sums hold them", dropped)
    if settings.admin_api_key:
        with session_scope(engine) as session:
            account_service.ensure_admin(session, settings.admin_api_key)
    task = None
    if settings.deadline_tick_s > 0:
        task = asyncio.create_task(_enforce_deadlines(app, settings.deadline_tick_s))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A clean stop writes this process's partial sums out (a crash loses nothing either:
        # the round's close replays the envelopes no checkpoint covers).
        with contextlib.suppress(Exception):
            await run_in_threadpool(lambda: partials.flush_due(engine, everything=True))
        engine.dispose()
        claim.release()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Pollen marketplace",
        version="0.1.0",
        summary="Private model training: encrypted federated updates, aggregated blind.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.blobs = store_for(settings)  # a folder, or the S3 bucket of POLLEN_BLOB_URL
    partials.install(
        app.state.blobs,
        every_updates=settings.checkpoint_updates,
        every_seconds=settings.checkpoint_seconds,
    )
    app.state.clock = utcnow
    app.state.rail = rail_for(settings)
    app.state.signer = install(settings, app.state.blobs)
    reputation.configure(decay=settings.reputation_decay)
    verification.configure(required=settings.require_verified_providers)
    problems.install(app)
    for module in (accounts, listings, jobs, offers, rounds, admin, money, privacy, translog):
        app.include_router(module.router)
    # The dashboard: the static mount goes first, before the pages' catch-all 404 route.
    app.mount("/ui/static", ui.static_files(), name="ui-static")
    app.include_router(ui.router, include_in_schema=False)
    return app
