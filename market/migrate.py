"""Programmatic Alembic: bring a database to the latest schema (run at app startup).

Several server processes may start at once on one fresh PostgreSQL database (`pollen server
--workers N`, or N machines). Unserialized, they race inside Alembic: two `CREATE TABLE`s of
the same name, or two rows in `alembic_version`, and the loser stops the whole server. So
`upgrade` runs under a transaction-scoped advisory lock: the first process migrates, the
others wait, then find the schema at head and do nothing. (`pollen server` also migrates once
in the parent before it starts its workers.) SQLite serves one process only (`market.db`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

import migrations
from market.db import AdvisoryLock

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged `migrations/` folder, no ini file needed.

    `__path__` rather than `__file__`: an editable install may see the folder as a namespace.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(next(iter(migrations.__path__)))))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply pending migrations on the engine's database."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = {"k": int(AdvisoryLock.MIGRATION)}
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), key)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("database schema at %s", revision)
