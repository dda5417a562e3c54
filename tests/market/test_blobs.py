"""The blob store's contract, on the local folder and on a real S3 server (SeaweedFS).

Each contract test runs against both stores; then what only S3 has to show: uploads and
downloads stream (a 64 MiB blob never whole in memory), and a server on an absent bucket or
with refused credentials does not start. A whole round on S3: tests/e2e/test_s3_blobs.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from market.app import create_app
from market.blobs import BlobStore, LocalBlobStore, store_for
from market.blobs_s3 import S3BlobStore
from market.config import Settings
from market.errors import BlobStoreUnavailableError
from tests.utils.seaweed import Seaweed

MiB = 1024 * 1024


def _s3_settings(seaweed: Seaweed, url: str, data_dir: Path, **over: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        data_dir=data_dir,
        blob_url=url,
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        **over,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """An empty store: a folder, or a fresh prefix in the SeaweedFS bucket."""
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    seaweed: Seaweed = request.getfixturevalue("seaweed")
    url: str = request.getfixturevalue("s3_blob_url")
    yield store_for(_s3_settings(seaweed, url, tmp_path / "data"))


def _temp_file_blob(store: BlobStore, size: int) -> tuple[object, str]:
    """A finished upload of `size` pseudo-random bytes, written 1 MiB at a time."""
    temp = store.temp(size)
    sha = hashlib.sha256()
    block = os.urandom(MiB)
    for i in range(size // MiB):
        chunk = bytes([i % 256]) + block[1:]
        sha.update(chunk)
        temp.write(chunk)
    temp.finish()
    return temp, sha.hexdigest()


# ---------------------------------------------------------------- contract, both stores


def test_bytes_round_trip(store: BlobStore) -> None:
    """What is put under a key comes back byte for byte, and a second put replaces it."""
    store.put_bytes("jobs/j1/context.bin", b"first")
    assert store.get_bytes("jobs/j1/context.bin") == b"first"
    store.put_bytes("jobs/j1/context.bin", b"second, longer")
    assert store.get_bytes("jobs/j1/context.bin") == b"second, longer"
    assert store.exists("jobs/j1/context.bin")


def test_missing_blob(store: BlobStore) -> None:
    """An absent key is reported as absent, and reading it raises FileNotFoundError."""
    assert not store.exists("jobs/nope/model.st")
    with pytest.raises(FileNotFoundError):
        store.get_bytes("jobs/nope/model.st")
    with pytest.raises(FileNotFoundError):
        store.open_read("jobs/nope/model.st")


def test_delete_is_idempotent(store: BlobStore) -> None:
    """Deleting removes the blob; deleting it again (or a key never written) is no error."""
    store.put_bytes("jobs/j1/x", b"x")
    store.delete("jobs/j1/x")
    assert not store.exists("jobs/j1/x")
    store.delete("jobs/j1/x")
    store.delete("jobs/never/written")


@pytest.mark.parametrize("key", ["../etc/passwd", "jobs/../../x", "/abs", "a//b", "a b", ""])
def test_bad_keys_are_refused(store: BlobStore, key: str) -> None:
    """A key that could escape the store's root (or prefix) is refused by every operation."""
    for op in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.open_read(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError, match="bad blob key"):
            op()


def test_put_temp_moves_the_upload(store: BlobStore) -> None:
    """A finished upload becomes the blob (checksum intact) and its temp file is gone."""
    temp, sha = _temp_file_blob(store, 3 * MiB)
    path = temp.path  # type: ignore[attr-defined]
    store.put_temp("jobs/j1/model-1.st", temp)  # type: ignore[arg-type]
    assert not path.exists()
    assert hashlib.sha256(store.get_bytes("jobs/j1/model-1.st")).hexdigest() == sha


def test_open_read_streams_chunks(store: BlobStore) -> None:
    """A streamed read gives the size up front and the bytes in several bounded chunks."""
    data = os.urandom(3 * MiB + 17)
    store.put_bytes("jobs/j1/rounds/0001/acc.bin", data)
    blob = store.open_read("jobs/j1/rounds/0001/acc.bin")
    assert blob.size == len(data)
    chunks = list(blob)
    assert len(chunks) >= 3 and max(map(len, chunks)) <= MiB
    assert b"".join(chunks) == data


def test_sweep_envelopes_deletes_only_envelopes(store: BlobStore) -> None:
    """The startup sweep deletes kept envelopes and nothing else (sums, models, contexts)."""
    keep = ["jobs/j1/model.st", "jobs/j1/rounds/0001/acc.bin", "jobs/j1/rounds/0001/groups/0"]
    gone = [
        f"jobs/j{j}/rounds/000{r}/envelopes/p{p}" for j in (1, 2) for r in (1, 2) for p in (1, 2)
    ]
    for key in keep + gone:
        store.put_bytes(key, b"x")
    assert store.sweep_envelopes() == len(gone)
    assert all(store.exists(k) for k in keep)
    assert not any(store.exists(k) for k in gone)


def test_sweep_temp_removes_only_stale_uploads(store: BlobStore) -> None:
    """Upload buffers left by a dead process go; one still being written stays."""
    stale, live = store.temp(10), store.temp(10)
    stale.close()
    live.write(b"x")
    hour_ago = time.time() - 3600
    os.utime(stale.path, (hour_ago, hour_ago))
    assert store.sweep_temp(older_than_s=600) == 1
    assert not stale.path.exists() and live.path.exists()
    live.discard()


def test_startup_removes_stale_partial_uploads(settings: Settings) -> None:
    """A server starting on a folder where a previous process died mid-upload deletes the
    stale partial file, and leaves one that is still being written (recent)."""
    tmp = Path(settings.blob_root) / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    stale = tmp / "upload-dead.part"
    live = tmp / "upload-live.part"
    stale.write_bytes(b"\0" * 1000)
    live.write_bytes(b"\0" * 1000)
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/reputation").status_code == 200
    assert not stale.exists()
    assert live.exists()


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("url", "kind"),
    [("", "local"), ("/srv/pollen-blobs", "local"), ("file:///srv/b", "local")],
)
def test_blob_url_selects_a_folder(tmp_path: Path, url: str, kind: str) -> None:
    """No URL is the data dir's blob folder; a path or file:/// URL is that folder."""
    s = Settings(data_dir=tmp_path, blob_url=url)
    expected = tmp_path / "blobs" if not url else Path(url.removeprefix("file://"))
    assert s.blob_root == expected


@pytest.mark.parametrize("url", ["s3://", "gs://bucket/x", "file://relative/path"])
def test_bad_blob_url_is_refused(tmp_path: Path, url: str) -> None:
    """A blob URL that names no usable place is a settings error naming the variable."""
    with pytest.raises(ValueError, match="POLLEN_BLOB_URL"):
        Settings(data_dir=tmp_path, blob_url=url)


# ---------------------------------------------------------------- S3 only


def test_s3_keys_live_under_the_prefix(seaweed: Seaweed, tmp_path: Path) -> None:
    """Two stores on one bucket with different prefixes never see each other's blobs."""
    a = store_for(_s3_settings(seaweed, f"s3://{seaweed.bucket}/tenant-a", tmp_path / "a"))
    b = store_for(_s3_settings(seaweed, f"s3://{seaweed.bucket}/tenant-b/", tmp_path / "b"))
    a.put_bytes("jobs/j1/model.st", b"a's model")
    assert not b.exists("jobs/j1/model.st")
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(
        Bucket=seaweed.bucket, Prefix="tenant-a/").get("Contents", [])]  # fmt: skip
    assert keys == ["tenant-a/jobs/j1/model.st"]


def test_s3_upload_and_download_never_hold_the_whole_blob(
    seaweed: Seaweed, s3_blob_url: str, tmp_path: Path
) -> None:
    """A 64 MiB upload streams from its temp file into S3 (multipart) and back out in chunks:
    Python's peak allocation stays a small fraction of the blob (a whole read would be ≥ 64 MiB).
    """
    store = store_for(_s3_settings(seaweed, s3_blob_url, tmp_path / "data"))
    size = 64 * MiB
    temp, sha = _temp_file_blob(store, size)
    tracemalloc.start()
    try:
        store.put_temp("jobs/big/model-1.st", temp)  # type: ignore[arg-type]
        _, up_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        blob = store.open_read("jobs/big/model-1.st")
        for chunk in blob:
            digest.update(chunk)
        _, down_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blob.size == size and digest.hexdigest() == sha
    assert up_peak < 24 * MiB, f"upload peaked at {up_peak / MiB:.1f} MiB"
    assert down_peak < 8 * MiB, f"download peaked at {down_peak / MiB:.1f} MiB"


def test_s3_absent_bucket_stops_startup(seaweed: Seaweed, tmp_path: Path) -> None:
    """A bucket that does not exist is refused when the store is built, with one clear line."""
    with pytest.raises(BlobStoreUnavailableError, match="the bucket does not exist"):
        store_for(_s3_settings(seaweed, "s3://no-such-bucket/p", tmp_path))


def test_s3_refused_credentials_stop_startup(seaweed: Seaweed, tmp_path: Path) -> None:
    """A wrong secret key is refused when the store is built, naming the settings to fix."""
    settings = _s3_settings(seaweed, f"s3://{seaweed.bucket}/p", tmp_path)
    settings.s3_secret_key = type(settings.s3_secret_key)("wrong")  # type: ignore[misc]
    with pytest.raises(BlobStoreUnavailableError, match="credentials are refused"):
        store_for(settings)


def test_server_refuses_to_start_on_a_missing_bucket(seaweed: Seaweed, tmp_path: Path) -> None:
    """`python -m market` on an absent bucket exits non-zero with one line saying why."""
    env = {
        **os.environ,
        **seaweed.env("p"),
        "POLLEN_BLOB_URL": "s3://no-such-bucket/p",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "market", "--data-dir", str(tmp_path), "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("blob store s3://no-such-bucket/p at http://127.0.0.1:"), lines
    assert lines[-1].endswith("the bucket does not exist")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pollen.db").exists()


@pytest.mark.slow
def test_s3_outage_is_a_clear_503(tmp_path: Path) -> None:
    """A bucket that goes away under a running server fails reads and writes with
    `BlobStoreUnavailableError` (503 problem) naming the blob, not a bare 500."""
    from tests.utils import seaweed as sw

    own, proc = sw.start(sw.require_weed(), tmp_path / "weed")
    try:
        store = store_for(_s3_settings(own, f"s3://{own.bucket}/p", tmp_path / "data"))
        store.put_bytes("jobs/j1/model.st", b"m")
    finally:
        sw.stop(proc)
    assert BlobStoreUnavailableError.status == 503
    with pytest.raises(BlobStoreUnavailableError, match=r"reading jobs/j1/model\.st failed"):
        store.open_read("jobs/j1/model.st")
    with pytest.raises(BlobStoreUnavailableError, match="writing jobs/j1/other failed"):
        store.put_bytes("jobs/j1/other", b"x")


def test_delete_many_removes_every_key_and_ignores_absent_ones(store: BlobStore) -> None:
    """A batch delete takes what exists, skips what does not, and reports no failure."""
    keys = [f"jobs/j1/rounds/1/envelopes/sub_{i}.env" for i in range(5)]
    for key in keys:
        store.put_bytes(key, key.encode())
    store.put_bytes("jobs/j1/model.st", b"kept")
    assert store.delete_many([*keys, "jobs/never/written"]) == []
    assert not any(store.exists(k) for k in keys)
    assert store.get_bytes("jobs/j1/model.st") == b"kept"
    assert store.delete_many([]) == []


def test_s3_delete_many_is_one_request_per_thousand_keys(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_for(_s3_settings(seaweed, f"s3://{seaweed.bucket}/batch", tmp_path / "data"))
    assert isinstance(store, S3BlobStore)
    keys = [f"jobs/j1/e/{i}" for i in range(7)]
    for key in keys:
        store.put_bytes(key, b"x")
    monkeypatch.setattr("market.blobs_s3.DELETE_BATCH", 3)
    calls: list[int] = []
    real = store.client.delete_objects

    def counted(**kw: Any) -> Any:
        calls.append(len(kw["Delete"]["Objects"]))
        return real(**kw)

    monkeypatch.setattr(store.client, "delete_objects", counted)
    monkeypatch.setattr(store.client, "delete_object", None)  # never one by one
    assert store.delete_many(keys) == []
    assert calls == [3, 3, 1]
    assert not any(store.exists(k) for k in keys)
