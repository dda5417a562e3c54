"""Column types and helpers shared by the tables."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def new_id(prefix: str) -> str:
    """A random, prefixed string id such as `job_3f9a...`."""
    return f"{prefix}_{secrets.token_hex(8)}"


_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def could_be_id(value: str) -> bool:
    """Whether `value` could name a row; anything else is not looked up at all.

    Ids come from URLs: PostgreSQL refuses text holding NUL bytes with an error (a 500), so
    a path like `/v1/jobs/%00` must be answered "not found" before it reaches a query.
    """
    return _ID.fullmatch(value) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database.

    SQLite drops time zones, so storing naive UTC everywhere keeps both backends identical.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)
