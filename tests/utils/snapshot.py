"""Everything the service holds (every table's rows and every blob), to assert a refused
request changed nothing (save the invalid-submission reputation event a refused envelope
records against its sender)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

import market.models  # noqa: F401  (registers the tables)


def snapshot(client: TestClient) -> dict[str, Any]:
    app: Any = client.app
    engine: Engine = app.state.engine
    state: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = conn.execute(select(table)).mappings().all()
            if table.name == "reputation_event":
                # A refused envelope changes nothing but its sender's reputation, on purpose.
                rows = [r for r in rows if r["kind"] != "invalid-submission"]
            state[table.name] = sorted((dict(r) for r in rows), key=repr)
    root = app.state.blobs.root
    state["blobs"] = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
    )
    return state
