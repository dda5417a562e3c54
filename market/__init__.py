"""Pollen's marketplace service: accounts, listings, jobs, matching, rounds and encrypted
submissions over HTTP (FastAPI), on SQLite or PostgreSQL."""

from market.app import create_app
from market.config import Settings
from market.server import serve

__all__ = ["Settings", "create_app", "serve"]
