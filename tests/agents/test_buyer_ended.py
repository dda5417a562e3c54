"""`pollen job run` on a job that ended badly says so in one line instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from agents.buyer import BuyerRun, JobEndedError
from agents.client import PollenClient
from agents.data import Dataset
from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.factories import SCHEMA
from tests.utils.scenario import running_job


def test_run_on_a_cancelled_job_is_a_clear_error(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """A buyer run on a cancelled job raises JobEndedError naming the job and its state."""
    scn = running_job(client, clock, buyer_keys)
    r = client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    api = PollenClient("http://testserver", scn.buyer.api_key, http=client)
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(20, 80, 30), rng.normal(25, 4, 30), rng.normal(100, 20, 30)])
    names = [f["name"] for f in SCHEMA["features"]]
    holdout = Dataset(X, rng.integers(0, 2, 30), names, SCHEMA["label"]["name"])
    run = BuyerRun(api, buyer_keys, scn.job_id, holdout, out_dir=tmp_path, poll_s=0.01)
    with pytest.raises(JobEndedError, match=f"job {scn.job_id} is cancelled"):
        run.run()


def test_run_on_an_open_job_says_how_many_providers_it_waits_for(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """While a job waits for providers, the buyer run says so once per change, not silently."""
    from tests.utils.scenario import open_job

    scn = open_job(client, clock, buyer_keys, providers=2, accept=1)
    api = PollenClient("http://testserver", scn.buyer.api_key, http=client)
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(20, 80, 30), rng.normal(25, 4, 30), rng.normal(100, 20, 30)])
    names = [f["name"] for f in SCHEMA["features"]]
    holdout = Dataset(X, rng.integers(0, 2, 30), names, SCHEMA["label"]["name"])
    said: list[str] = []
    run = BuyerRun(api, buyer_keys, scn.job_id, holdout, out_dir=tmp_path, notify=said.append)
    assert run._job_if_running() is None and run._job_if_running() is None
    assert said == [
        f"job {scn.job_id} is open: 1 of 2 providers needed have accepted "
        "(pollen job status shows why listings are left out)"
    ]
