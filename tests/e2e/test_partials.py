"""A server process killed between two checkpoints of its partial sum loses nothing.

The marketplace runs under uvicorn with a checkpoint every 2 updates (and none by time).
Five providers are in round 1; three upload real CKKS envelopes: the first two are
checkpointed, the third lives only in the killed process's memory (and in its stored
envelope). After kill -9 and a restart the last two upload, the round closes all-in, and the
buyer's decrypted sum holds each of the five updates exactly once; the envelopes and the
checkpoints are gone, and the five are paid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlmodel import Session, select

from bench.load import _value, round_envelopes, setup_round
from crypto import BuyerKeys, decrypt_aggregate
from market.db import make_engine
from market.lifecycle import RoundState
from market.models import Round, RoundPartial, Submission
from tests.utils.faults import ServerProcess, serve_restartable, wait_for

pytestmark = pytest.mark.e2e

PROVIDERS = 5


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A restartable server that checkpoints every 2 updates and never by time."""
    env = {
        "POLLEN_DEADLINE_TICK_S": "0.2",
        "POLLEN_CHECKPOINT_UPDATES": "2",
        "POLLEN_CHECKPOINT_SECONDS": "3600",
    }
    yield from serve_restartable(request, tmp_path, request.param, env)


def _put(url: str, api_key: str, job_id: str, body: bytes) -> int:
    r = httpx.put(
        f"{url}/v1/jobs/{job_id}/rounds/1/submission",
        content=body,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return r.status_code


def test_kill_between_checkpoints_loses_no_accepted_update(server: ServerProcess) -> None:
    """kill -9 with one accepted update outside every checkpoint: after the restart the round's
    sum holds all five updates once, and no envelope or checkpoint is left behind."""
    keys = BuyerKeys.generate()
    buyer, providers, job_id, params = setup_round(
        server.url, server.admin_key, keys, agents=PROVIDERS, hidden=20, deadline_s=600
    )
    envelopes = round_envelopes(keys, job_id, providers, params)
    for p, body in zip(providers[:3], envelopes[:3], strict=True):
        _put(server.url, p.api_key, job_id, body)
    engine = make_engine(server.env["POLLEN_DATABASE_URL"])
    round_dir = server.data_dir / "blobs" / "jobs" / job_id / "rounds" / "0001"
    try:
        with Session(engine) as s:
            rnd = s.exec(select(Round).where(Round.job_id == job_id)).one()
            cps = s.exec(select(RoundPartial).where(RoundPartial.round_id == rnd.id)).all()
            # Two updates checkpointed; the third exists only in memory and as its envelope.
            assert [sorted(c.providers) for c in cps] == [sorted(p.id for p in providers[:2])]
        assert len(list(round_dir.glob("env-*.bin"))) == 3

        server.kill()
        server.start()
        for p, body in zip(providers[3:], envelopes[3:], strict=True):
            _put(server.url, p.api_key, job_id, body)
        wait_for(
            lambda: buyer.client.get_round(job_id, 1).state == RoundState.CLOSED,
            "the close",
            timeout=30,
        )

        agg = decrypt_aggregate(keys, buyer.client.get_aggregate(job_id, 1))
        assert sorted(agg.provider_ids) == sorted(p.id for p in providers)
        assert agg.count == PROVIDERS
        want = sum(_value(i) for i in range(PROVIDERS))
        np.testing.assert_allclose(agg.total, want, atol=1e-4)
        rnd_view = buyer.client.get_round(job_id, 1)
        assert sorted(rnd_view.included) == sorted(p.id for p in providers)
        receipt = buyer.client.receipt(job_id)
        paid = {line["provider_id"] for line in receipt.providers if line["earned_cents"] > 0}
        assert paid == {p.id for p in providers}
        # Nothing left to steal or to replay twice.
        assert list(round_dir.glob("env-*.bin")) == []
        assert list(round_dir.glob("partial-*.bin")) == []
        with Session(engine) as s:
            assert s.exec(select(RoundPartial)).all() == []
            subs = s.exec(select(Submission).where(Submission.job_id == job_id)).all()
            assert len(subs) == PROVIDERS and all(x.envelope_key is None for x in subs)
    finally:
        engine.dispose()
