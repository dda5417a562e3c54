"""`pollen admin approve-provider` / `revoke-provider` against a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agents.cli import app
from market import Settings, create_app
from tests.utils.factories import ADMIN_KEY
from tests.utils.stripe_env import serve_in_thread

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path / "d", admin_api_key=ADMIN_KEY, deadline_tick_s=0)
    with serve_in_thread(create_app(settings)) as base:
        yield base


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _register(url: str, role: str) -> dict[str, str]:
    r = httpx.post(f"{url}/v1/accounts", json={"role": role, "name": f"a {role}"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_approve_and_revoke_provider(url: str) -> None:
    """The operator verifies a provider and revokes it; `account` shows the state."""
    p = _register(url, "provider")
    code, out = _run("admin", "approve-provider", p["id"], "--server", url, "--api-key", ADMIN_KEY)
    assert code == 0, out
    assert f"provider {p['id']} (a provider) verified by adm_" in out
    me = httpx.get(f"{url}/v1/accounts/me", headers={"Authorization": f"Bearer {p['api_key']}"})
    assert me.json()["verified_at"] is not None
    code, out = _run("admin", "revoke-provider", p["id"], "--server", url, "--api-key", ADMIN_KEY)
    assert code == 0 and "is no longer verified" in out


def test_refusals_are_one_line(url: str) -> None:
    """Unknown account, a buyer, a non-admin key: one clear line each, exit status 1."""
    buyer = _register(url, "buyer")
    p = _register(url, "provider")
    cases = [
        (["prv_0000000000000000", "--api-key", ADMIN_KEY], "no account prv_0000000000000000"),
        ([buyer["id"], "--api-key", ADMIN_KEY], "is a buyer, not a provider"),
        ([p["id"], "--api-key", p["api_key"]], "this needs a admin account"),
    ]
    for args, message in cases:
        code, out = _run("admin", "approve-provider", *args, "--server", url)
        assert code == 1 and message in out and len(out.strip().splitlines()) == 1, out


def test_connect_on_the_manual_rail_is_one_line(url: str) -> None:
    """`pollen account connect` without Stripe Connect says the operator approves instead."""
    p = _register(url, "provider")
    code, out = _run("account", "connect", "--server", url, "--api-key", p["api_key"])
    assert code == 1 and "an operator approves providers" in out, out
