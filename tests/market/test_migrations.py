"""The schema comes from Alembic, and Alembic matches the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlmodel import SQLModel

from crypto import BuyerKeys, PublicContext
from market import Settings, create_app
from market.db import make_engine
from market.migrate import upgrade
from tests.utils.factories import register
from tests.utils.scenario import draft_job


def test_upgrade_head_matches_models(db_url: str) -> None:
    """`alembic upgrade head` on an empty database yields exactly the models' metadata."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            SQLModel.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        assert inspect(engine).get_table_names() == []
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_fresh_data_dir_is_migrated_at_startup(tmp_path: Path) -> None:
    """A brand-new data directory works: the app creates the SQLite file and its schema."""
    settings = Settings(data_dir=tmp_path / "fresh", deadline_tick_s=0)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/accounts", json={"role": "buyer", "name": "b"})
        assert r.status_code == 201
    assert (tmp_path / "fresh" / "pollen.db").is_file()
    assert (tmp_path / "fresh" / "blobs").is_dir()


def test_stored_context_is_public(client: TestClient, buyer_keys: BuyerKeys) -> None:
    """What the server keeps of the buyer's context holds no secret key."""
    buyer = register(client, "buyer")
    job_id = draft_job(client, buyer_keys, buyer)
    app = client.app
    job = client.get(f"/v1/jobs/{job_id}", headers=buyer.headers).json()
    stored = app.state.blobs.get_bytes(f"jobs/{job_id}/context-{job['fingerprint'][:16]}.bin")  # type: ignore[attr-defined]
    ctx = PublicContext.from_bytes(stored)
    assert ctx.is_public()
    assert ctx.fingerprint == job["fingerprint"] == buyer_keys.public_context().fingerprint
