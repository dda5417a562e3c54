"""Run the marketplace under uvicorn (what `pollen server` calls)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from market.app import create_app
from market.config import Settings


def serve(*, data_dir: str, host: str, port: int, database_url: str | None = None) -> None:
    """Serve the API on host:port with data (SQLite file, blobs) under `data_dir`."""
    overrides: dict[str, object] = {"data_dir": Path(data_dir)}
    if database_url:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
