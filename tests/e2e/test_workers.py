"""Several server processes on one PostgreSQL database: nothing accepted is ever lost.

`pollen server --workers 4` on a fresh database: the workers migrate it once, then 40
providers upload real CKKS envelopes into one round at the same instant, each over its own
connection, so the uploads land on different processes. Every 201 must be inside the sum the
buyer decrypts exactly once, the round's settlement must pay exactly the providers in that
sum, and the ledger must verify. (Before the locked re-reads refreshed the ORM's identity
map, workers added onto stale running sums: 26 of 32 updates survived, and all 32 were paid.)
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agents.client import PollenClient
from agents.processes import free_port, start_server, stop, wait_ready
from bench.load import _value, burst, round_envelopes, setup_round
from crypto import BuyerKeys, decrypt_aggregate
from dataspec.views import RoundPublic
from tests.utils import postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

PROVIDERS = 40
WORKERS = 4


@pytest.fixture
def four_workers(pg_server: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`python -m market --workers 4` on a fresh, unmigrated PostgreSQL database."""
    name = f"pollen_workers_{uuid.uuid4().hex[:10]}"
    database_url = postgres.create_database(pg_server, name)
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    port, admin_key = free_port(), secrets.token_urlsafe(16)
    env = {
        "POLLEN_DATABASE_URL": database_url,
        "POLLEN_DEADLINE_TICK_S": "0.5",
        "POLLEN_MIN_ROUND_DEADLINE_S": "1",
    }
    proc = start_server(data_dir, port, admin_key, extra_env=env, workers=WORKERS)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}", admin_key, data_dir
        assert proc.poll() is None, "the server stopped during the test"
    finally:
        stop(proc)
        postgres.drop_database(pg_server, name)


def _wait_closed(client: PollenClient, job_id: str, timeout: float) -> RoundPublic:
    deadline = time.monotonic() + timeout
    rnd = client.get_round(job_id, 1)
    while rnd.state == "collecting" and time.monotonic() < deadline:
        time.sleep(0.3)
        rnd = client.get_round(job_id, 1)
    return rnd


def test_four_workers_lose_no_accepted_update(four_workers: tuple[str, str, Path]) -> None:
    """40 concurrent uploads over 4 processes: every 201 is in the decrypted sum once, and paid."""
    url, admin_key, data_dir = four_workers
    keys = BuyerKeys.generate()
    # Quorum 2 and a short deadline: if an update were lost the round still closes, at the
    # deadline, and the test sees what was paid for what.
    buyer, providers, job_id, params = setup_round(
        url, admin_key, keys, agents=PROVIDERS, hidden=200, quorum=2, deadline_s=20
    )
    envelopes = round_envelopes(keys, job_id, providers, params)
    outcomes, _ = asyncio.run(burst(url, job_id, providers, envelopes))
    accepted = {p.id for p, (s, _, _) in zip(providers, outcomes, strict=True) if s == 201}
    assert len(accepted) == PROVIDERS, [o for o in outcomes if o[0] != 201][:3]

    rnd = _wait_closed(buyer.client, job_id, timeout=40)
    assert rnd.state == "closed"
    agg = decrypt_aggregate(keys, buyer.client.get_aggregate(job_id, 1))
    receipt = buyer.client.receipt(job_id)
    paid = {line["provider_id"] for line in receipt.providers if line["earned_cents"] > 0}
    assert (agg.count, len(paid)) == (PROVIDERS, PROVIDERS)
    assert sorted(agg.provider_ids) == sorted(accepted)
    assert rnd.close_reason == "all-in"
    want = sum(_value(i) for i in range(PROVIDERS))
    np.testing.assert_allclose(agg.total, want, atol=1e-3)
    assert paid == accepted
    assert PollenClient(url, admin_key).verify_ledger().ok is True
    log = (data_dir / "server.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if "Error" in line or "Traceback" in line]
    assert not errors, errors[:8]
    # Each worker's own lines reach the log, named by its process: every acceptance, and
    # the close (a spawned worker once had no log handler and dropped them all).
    accepted_lines = [line for line in log.splitlines() if f"job {job_id} round 1: update" in line]
    assert len(accepted_lines) == PROVIDERS, log[-3000:]
    assert len({line.split()[2] for line in accepted_lines}) > 1  # several worker pids
    assert any(f"job {job_id} round 1 closed" in line for line in log.splitlines())
