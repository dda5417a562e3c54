"""Security promises: API keys stored hashed, no pickle on the wire, only public contexts on
the server, and a buyer secret key that stays in its 0600 file and never goes out."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tenseal as ts
import torch
from fastapi.testclient import TestClient
from safetensors.numpy import load as load_safetensors
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from agents.buyer import BuyerRun, post_job
from agents.client import PollenClient
from agents.data import Dataset
from crypto import BuyerKeys, PublicContext, decrypt_aggregate
from market.models import Job
from tests.utils.clock import FakeClock
from tests.utils.factories import ADMIN_KEY, SCHEMA, Actor, admin, job_body, model_file, register
from tests.utils.factories import listing_body as listing
from tests.utils.scenario import Scenario, running_job
from tests.utils.wire import wire_bytes

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 32  # bytes: a leaked run this long is no coincidence


def _rows(client: TestClient) -> list[dict[str, Any]]:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            out += [dict(r) for r in conn.execute(select(table)).mappings().all()]
    return out


def test_api_keys_are_stored_only_as_hashes(
    client: TestClient, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No row, database file or log line holds an API key; accounts hold its SHA-256."""
    caplog.set_level(logging.DEBUG)
    actors = [register(client, "buyer"), register(client, "provider"), admin(client)]
    for actor in actors:
        assert client.get("/v1/accounts/me", headers=actor.headers).status_code == 200
    rows = _rows(client)
    dump = repr(rows)
    hashes = {r["key_hash"] for r in rows if "key_hash" in r}
    for actor in actors:
        secret = actor.api_key.removeprefix("pk_")
        assert hashlib.sha256(actor.api_key.encode()).hexdigest() in hashes
        # Any 12-character piece of the key, not just the whole of it.
        pieces = {secret[i : i + 12] for i in range(len(secret) - 11)}
        assert not any(p in dump for p in pieces), f"{actor.role} key found in a row"
        assert not any(p in caplog.text for p in pieces), f"{actor.role} key found in logs"
        if db_url.startswith("sqlite:///"):
            path = Path(db_url.removeprefix("sqlite:///"))
            files = [path, *path.parent.glob(path.name + "-*")]  # -wal, -journal
            raw = b"".join(f.read_bytes() for f in files if f.exists())
            assert raw and actor.api_key.encode() not in raw
            assert not any(p.encode() in raw for p in pieces)


# Every route that moves raw bytes, reviewed: a new one must be added here on purpose.
BINARY_UPLOADS = {
    ("PUT", "/v1/jobs/{job_id}/context"),
    ("PUT", "/v1/jobs/{job_id}/model"),
    ("PUT", "/v1/jobs/{job_id}/final-model"),
    ("PUT", "/v1/jobs/{job_id}/rounds/{number}/model"),
    ("PUT", "/v1/jobs/{job_id}/rounds/{number}/submission"),
}
BINARY_DOWNLOADS = {
    ("GET", "/v1/jobs/{job_id}/context"),
    ("GET", "/v1/jobs/{job_id}/final-model"),
    ("GET", "/v1/jobs/{job_id}/rounds/{number}/model"),
    ("GET", "/v1/jobs/{job_id}/rounds/{number}/aggregate"),
    ("GET", "/v1/jobs/{job_id}/rounds/{number}/groups/{index}/aggregate"),
}


def _binary_routes(client: TestClient) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    spec = client.get("/openapi.json").json()
    uploads, downloads = set(), set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {})
            if any(not t.endswith("json") for t in body):
                uploads.add((method.upper(), path))
            for response in op.get("responses", {}).values():
                if any(not t.endswith("json") for t in response.get("content", {})):
                    downloads.add((method.upper(), path))
    return uploads, downloads


def _torch_file() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)  # a zip holding data.pkl
    return buffer.getvalue()


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def test_no_pickle_crosses_the_network(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Binary routes are exactly the reviewed ones; what they serve is safetensors, a public
    context or an aggregate; pickles and torch files uploaded as models are refused."""
    uploads, downloads = _binary_routes(client)
    assert uploads == BINARY_UPLOADS
    assert downloads == BINARY_DOWNLOADS
    scn = running_job(client, clock, buyer_keys)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    job = f"/v1/jobs/{scn.job_id}"
    r = client.put(f"{job}/final-model", content=model_file(), headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    served = {
        url: client.get(url, headers=scn.buyer.headers)
        for url in (f"{job}/rounds/1/model", f"{job}/final-model", f"{job}/context")
    }
    served["aggregate"] = client.get(f"{job}/rounds/1/aggregate", headers=scn.buyer.headers)
    served["group"] = client.get(f"{job}/rounds/1/groups/0/aggregate", headers=scn.buyer.headers)
    for url, r in served.items():
        assert r.status_code == 200, (url, r.text)
        assert not r.content.startswith(b"\x80"), f"{url} looks like a pickle"
    assert set(load_safetensors(served[f"{job}/rounds/1/model"].content)) == {"a.weight", "b.bias"}
    load_safetensors(served[f"{job}/final-model"].content)
    assert PublicContext.from_bytes(served[f"{job}/context"].content).is_public()
    assert decrypt_aggregate(buyer_keys, served["aggregate"].content).count == 3
    # Three providers, quorum 2: one group of all three (never a sum of one).
    assert decrypt_aggregate(buyer_keys, served["group"].content).count == 3

    hostile = [pickle.dumps({"w": np.zeros(4)}), pickle.dumps(_Evil()), _torch_file()]
    for url in (f"{job}/final-model", f"{job}/rounds/2/model"):
        for data in hostile:
            r = client.put(url, content=data, headers=scn.buyer.headers)
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"] == "application/problem+json"


# Calls that would run code hidden in untrusted bytes.
UNSAFE_LOADS = re.compile(
    r"\b(pickle|cPickle|dill|cloudpickle|joblib|marshal|shelve)\.(load|loads|Unpickler|open)\b"
    r"|(?<!safetensors\.)\btorch\.load\b"  # safetensors.torch.load is the safe one
    r"|allow_pickle\s*=\s*True|\byaml\.(load|unsafe_load)\("
    r"|^\s*import (dill|cloudpickle)|\bread_pickle\b",
    re.MULTILINE,
)


def test_no_unsafe_deserializer_in_the_code() -> None:
    """No package a request can reach calls pickle, torch.load or another code-running loader."""
    found = []
    for package in ("market", "crypto", "agents", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            for match in UNSAFE_LOADS.finditer(path.read_text()):
                found.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert found == []
    # The detector itself works.
    assert UNSAFE_LOADS.search("state = torch.load(f)") and UNSAFE_LOADS.search("pickle.loads(b)")
    assert not UNSAFE_LOADS.search("safetensors.torch.load(data)")


def _secret_key_needles(keys: BuyerKeys) -> tuple[set[bytes], bytes]:
    """Every 32-byte window of the secret key, raw and as SEAL serializes it."""
    secret = keys._context.secret_key().data
    plain = secret.data()
    raw = np.array([plain.data(i) for i in range(plain.coeff_count())], dtype="<u8").tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        secret.save(f"{tmp}/sk")
        serialized = Path(f"{tmp}/sk").read_bytes()
    needles = {raw[i : i + WINDOW] for i in range(0, len(raw) - WINDOW + 1, 8)}
    needles |= {serialized[i : i + WINDOW] for i in range(0, len(serialized) - WINDOW + 1, 8)}
    return needles, serialized


def _leaks(data: bytes, needles: set[bytes]) -> bool:
    return any(data[i : i + WINDOW] in needles for i in range(len(data) - WINDOW + 1))


def test_every_context_the_server_stores_is_public(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """After a real round, every context blob is public and no blob holds secret-key bytes."""
    scn = running_job(client, clock, buyer_keys)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    r = client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert r.status_code == 200
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        context_keys = [k for (k,) in conn.execute(select(Job.__table__.c.context_key)) if k]
    assert context_keys
    blobs = client.app.state.blobs  # type: ignore[attr-defined]
    for key in context_keys:
        data = blobs.get_bytes(key)
        context = ts.context_from(data)
        assert context.is_public() and not context.has_secret_key()
        assert PublicContext.from_bytes(data).is_public()
    needles, _ = _secret_key_needles(buyer_keys)
    root: Path = blobs.root
    stored = [p for p in root.rglob("*") if p.is_file()]
    assert len(stored) >= 3  # context, model, the round's sum
    for path in stored:
        assert not _leaks(path.read_bytes(), needles), f"secret-key bytes in {path}"


class RecordingTransport(httpx.BaseTransport):
    """Every byte the buyer client sends, then the request handed to the in-process app."""

    def __init__(self, app_client: TestClient) -> None:
        self.app_client = app_client
        self.sent: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(wire_bytes(request))
        answer = self.app_client.send(request)
        return httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content, request=request
        )


def _holdout(n: int = 60) -> Dataset:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(20, 80, n), rng.normal(25, 4, n), rng.normal(100, 20, n)])
    names = [f["name"] for f in SCHEMA["features"]]
    return Dataset(X, rng.integers(0, 2, n), names, SCHEMA["label"]["name"])


def test_secret_key_file_is_0600_and_never_sent(
    client: TestClient, clock: FakeClock, tmp_path: Path
) -> None:
    """The key file is written 0600 even under umask 0; posting a job, uploading its context
    and decrypting a round through the buyer client sends no byte of the secret key."""
    keys = BuyerKeys.generate()
    old = os.umask(0)
    try:
        keys.save(tmp_path / "secret.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    needles, serialized = _secret_key_needles(keys)
    # The detector finds the key where it is: in the key file.
    assert _leaks((tmp_path / "secret.key").read_bytes(), needles)

    operator = Actor("admin", "admin", ADMIN_KEY)
    providers = [register(client, "provider", f"p{i}") for i in range(3)]
    for p in providers:
        assert client.post("/v1/listings", json=listing(), headers=p.headers).status_code == 201
    buyer = register(client, "buyer")
    recorder = RecordingTransport(client)
    buyer_client = PollenClient("http://testserver", buyer.api_key, transport=recorder)
    spec = job_body(rounds=1)
    job = post_job(buyer_client, keys, spec)
    r = client.post(
        f"/v1/admin/jobs/{job.id}/credit",
        json={"amount_cents": spec["budget_cents"]},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    scn = Scenario(client, clock, keys, buyer, operator, providers, job.id)
    scn.param_count = int(scn.job()["param_count"])
    for p in providers:
        assert scn.accept(p).status_code == 200
    for p in providers:
        assert scn.submit(p, 1, scn.envelope(p, 1, value=0.01)).status_code == 201
    outcome = BuyerRun(
        buyer_client, keys, job.id, _holdout(), out_dir=tmp_path / "buyer", poll_s=0.01
    ).run()
    assert outcome.state == "completed" and [r.providers for r in outcome.reports] == [3]

    wire = b"\n".join(recorder.sent)
    paths = [m.split(b"\n", 1)[0] for m in recorder.sent]
    assert any(b"PUT" in p and p.endswith(b"/context") for p in paths)
    assert any(p.endswith(b"/rounds/1/aggregate") for p in paths)
    assert not _leaks(wire, needles), "secret-key bytes went out on the wire"
    assert serialized not in wire and (tmp_path / "secret.key").read_bytes() not in wire
