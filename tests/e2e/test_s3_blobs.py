"""A round on a real server process whose blobs live in S3 (SeaweedFS), not on its disk.

`python -m market` with `POLLEN_BLOB_URL=s3://bucket/prefix`, on SQLite with one process and
on PostgreSQL with two (the scale path: no blob folder shared between workers). Three
providers submit real CKKS envelopes over HTTP; the buyer's decrypted sum is exactly what was
sent, the context, models and running sum are objects under the prefix, no envelope is kept,
and the server's data folder holds no blob. A 64 MiB model goes out of the server in chunks
straight from the bucket, its resident memory flat while it does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agents.processes import free_port, start_server, stop, wait_ready
from crypto import BuyerKeys, decrypt_aggregate
from tests.utils import postgres
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY
from tests.utils.scenario import PARAMS, running_job
from tests.utils.seaweed import Seaweed

pytestmark = [pytest.mark.e2e]


MiB = 1024 * 1024


@dataclass
class S3Server:
    url: str
    data_dir: Path
    prefix: str
    pid: int


@pytest.fixture(
    params=[
        pytest.param(("sqlite", 1), id="sqlite-1"),
        pytest.param(("postgres", 2), id="postgres-2", marks=pytest.mark.postgres),
    ]
)
def s3_server(
    request: pytest.FixtureRequest, seaweed: Seaweed, tmp_path: Path
) -> Iterator[S3Server]:
    backend, workers = request.param
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    env = {
        "POLLEN_DEADLINE_TICK_S": "0.5",
        "POLLEN_MIN_ROUND_DEADLINE_S": "1",
        **seaweed.env(prefix),
    }
    name = None
    if backend == "postgres":
        pg: str = request.getfixturevalue("pg_server")
        name = f"pollen_s3_{uuid.uuid4().hex[:10]}"
        env["POLLEN_DATABASE_URL"] = postgres.create_database(pg, name)
    port = free_port()
    proc = start_server(data_dir, port, ADMIN_KEY, extra_env=env, workers=workers)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield S3Server(f"http://127.0.0.1:{port}", data_dir, prefix, proc.pid)
        assert proc.poll() is None, "the server stopped during the test"
    finally:
        stop(proc)
        if name is not None:
            postgres.drop_database(request.getfixturevalue("pg_server"), name)


def test_round_with_blobs_in_s3(
    s3_server: S3Server, seaweed: Seaweed, buyer_keys: BuyerKeys
) -> None:
    """The sum decrypts to what the providers sent, and every blob is in the bucket."""
    with httpx.Client(base_url=s3_server.url, timeout=60) as client:
        scn = running_job(client, FakeClock(), buyer_keys)  # type: ignore[arg-type]
        for i, p in enumerate(scn.providers):
            r = scn.submit(p, 1, scn.envelope(p, 1, value=0.1 * (i + 1)))
            assert r.status_code == 201, r.text
        assert scn.round(1)["state"] == "closed"
        base = f"/v1/jobs/{scn.job_id}/rounds/1"
        agg = client.get(f"{base}/aggregate", headers=scn.buyer.headers)
        assert agg.status_code == 200, agg.text
        assert int(agg.headers["content-length"]) == len(agg.content)
        model = client.get(f"{base}/model", headers=scn.providers[0].headers)
        assert model.status_code == 200 and model.content
    dec = decrypt_aggregate(scn.keys, agg.content)
    assert dec.count == 3
    np.testing.assert_allclose(dec.total, np.full(PARAMS, 0.6), atol=1e-3)

    prefix = s3_server.prefix + "/"
    pages = seaweed.client().get_paginator("list_objects_v2")
    contents: list[Any] = [o for page in pages.paginate(Bucket=seaweed.bucket, Prefix=prefix)
                           for o in page.get("Contents", [])]  # fmt: skip
    keys = {o["Key"].removeprefix(prefix) for o in contents}
    job = f"jobs/{scn.job_id}/"
    assert any(k.startswith(job + "context") for k in keys), keys
    assert any(k.startswith(job + "rounds/0001/") for k in keys), keys
    assert not any("/envelopes/" in k for k in keys), keys
    assert not (s3_server.data_dir / "blobs").exists()
    assert list((s3_server.data_dir / "upload-tmp").glob("*")) == []


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@pytest.mark.slow
@pytest.mark.parametrize("s3_server", [("sqlite", 1)], indirect=True, ids=["sqlite-1"])
def test_model_download_streams_from_s3(s3_server: S3Server, buyer_keys: BuyerKeys) -> None:
    """Downloading a 64 MiB model never holds it in the server: resident memory during the
    download stays within a few MiB of before (reading it whole first added ≥ 64 MiB)."""
    params = 64 * MiB // 4  # float32: a 64 MiB model
    with httpx.Client(base_url=s3_server.url, timeout=120) as client:
        scn = running_job(client, FakeClock(), buyer_keys, param_count=params)  # type: ignore[arg-type]
        url = f"/v1/jobs/{scn.job_id}/rounds/1/model"
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_bytes(s3_server.pid))
                time.sleep(0.005)

        client.get(url, headers=scn.providers[0].headers).raise_for_status()  # warm up
        before = _rss_bytes(s3_server.pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        received = 0
        try:
            with client.stream("GET", url, headers=scn.providers[0].headers) as r:
                assert r.status_code == 200
                assert int(r.headers["content-length"]) > 64 * MiB
                for chunk in r.iter_bytes():
                    received += len(chunk)
        finally:
            done.set()
            sampler.join()
    assert received > 64 * MiB
    grew = peak[0] - before
    print(f"server RSS {before / MiB:.0f} MiB before, +{grew / MiB:.1f} MiB at peak")
    assert grew < 24 * MiB, f"server RSS grew {grew / MiB:.0f} MiB during a 64 MiB download"
