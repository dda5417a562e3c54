"""Shared fixtures: a database per test on SQLite and PostgreSQL, the real app, buyer keys.

`db_url` is parametrized over both backends. PostgreSQL comes from `POLLEN_TEST_PG_URL` (a
superuser or CREATEDB URL) or from a throwaway cluster started once per session. Each test
gets a fresh database copied from a template migrated once (a file copy on SQLite,
`CREATE DATABASE ... TEMPLATE` on PostgreSQL), so the schema comes from the migrations.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto import BuyerKeys
from market import Settings, create_app
from market.db import make_engine
from market.migrate import upgrade
from tests.utils import postgres
from tests.utils.clock import FakeClock
from tests.utils.seaweed import s3_blob_url, seaweed  # noqa: F401  (fixtures)

with warnings.catch_warnings():
    # Starlette nudges towards `httpx2`; the project pins httpx (see pyproject).
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ADMIN_KEY = "pk_test-admin-key"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "filterwarnings", "ignore::starlette.exceptions.StarletteDeprecationWarning"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test starts real processes: it is slow by definition, so that
    `pytest -m "not slow"` is the fast inner loop (the rest mark themselves `slow`)."""
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    url = os.environ.get("POLLEN_TEST_PG_URL")
    if url:
        yield url
        return
    with postgres.throwaway_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> str:
    name = f"pollen_tmpl_{uuid.uuid4().hex[:8]}"
    engine = make_engine(postgres.create_database(pg_server, name))
    upgrade(engine)
    engine.dispose()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "pollen.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "pollen.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server: str = request.getfixturevalue("pg_server")
    template_name: str = request.getfixturevalue("pg_template")
    name = f"pollen_t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(server, name, template=template_name)
    try:
        yield url
    finally:
        postgres.drop_database(server, name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        admin_api_key=ADMIN_KEY,
        deadline_tick_s=0,  # tests drive deadlines through the clock and `tick`
        min_round_deadline_s=1,  # rounds with deadlines of a few (fake) seconds
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings)
    app.state.clock = clock
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def buyer_keys() -> BuyerKeys:
    return BuyerKeys.generate()


@pytest.fixture(scope="session")
def other_buyer_keys() -> BuyerKeys:
    return BuyerKeys.generate()
