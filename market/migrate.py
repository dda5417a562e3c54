"""Programmatic Alembic: bring a database to the latest schema (run at app startup)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

import migrations

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
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("database schema at %s", revision)
