"""Blobs in an S3-compatible bucket (SeaweedFS in the tests), behind `market.blobs.BlobStore`.

Selected with `POLLEN_BLOB_URL=s3://bucket/prefix`; every key is stored as `prefix/key`.
Uploads are still received into a local temp file (with the size limit and stall timeout of
`TempBlob`), then streamed to the bucket by boto3's transfer manager in multipart chunks, so
no envelope or model is ever whole in memory; downloads come back as a `BlobStream` of the
object's body. A PUT on S3 is atomic (an object is visible whole or not at all), which is
what the folder store gets from its rename.

Every several-process deployment shares one bucket, so sweeping envelopes lists and deletes
by prefix; upload buffers are local to each process's machine and swept there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from market import blobkeys
from market.blobs import (
    CHUNK,
    BlobStore,
    BlobStream,
    TempBlob,
    check_key,
    sweep_upload_dir,
)
from market.errors import BlobStoreUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Multipart in 8 MiB parts, two at a time: a 256 MiB model upload holds about 16 MiB.
TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=2,
    io_chunksize=256 * 1024,
)
_MISSING = {"404", "NoSuchKey", "NotFound"}
DELETE_BATCH = 1000  # S3's limit of keys per DeleteObjects


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _failing_as_unavailable(what: str) -> Iterator[None]:
    """A store that is down or refusing mid-request: 503 with what failed, not a bare 500."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise
        raise BlobStoreUnavailableError(f"blob store: {what} failed: {_code(exc)}") from exc
    except BotoCoreError as exc:
        raise BlobStoreUnavailableError(f"blob store: {what} failed: {exc}") from exc


class S3BlobStore(BlobStore):
    """Blobs as objects `prefix/key` in `bucket`; upload buffers in the local `temp_dir`."""

    def __init__(self, client: S3Client, *, bucket: str, prefix: str, temp_dir: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._tmp = temp_dir
        self._tmp.mkdir(parents=True, exist_ok=True)

    @classmethod
    def connect(
        cls,
        *,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str,
        temp_dir: Path,
    ) -> S3BlobStore:
        """A store on `bucket`, checked now: absent or forbidden raises with one clear line."""
        kwargs: dict[str, Any] = {}
        if access_key is not None:
            kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},  # SeaweedFS, MinIO and friends on one host
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=32,
            ),
            **kwargs,
        )
        where = f"s3://{bucket}/{prefix} at {endpoint or 'the default AWS endpoint'}"
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING or code == "NoSuchBucket":
                why = "the bucket does not exist"
            elif code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                why = "the credentials are refused (POLLEN_S3_ACCESS_KEY / POLLEN_S3_SECRET_KEY)"
            else:
                why = f"the server answered {code or exc}"
            raise BlobStoreUnavailableError(f"blob store {where}: {why}") from None
        except BotoCoreError as exc:
            raise BlobStoreUnavailableError(f"blob store {where}: {exc}") from None
        return cls(client, bucket=bucket, prefix=prefix, temp_dir=temp_dir)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._key(key)
        with _failing_as_unavailable(f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)

    def put_temp(self, key: str, temp: TempBlob) -> None:
        name = self._key(key)
        try:
            with _failing_as_unavailable(f"writing {key}"):
                if temp.size < TRANSFER.multipart_threshold:
                    # One PUT from the open file: the transfer manager's threads and futures
                    # cost more CPU than sending an envelope of a few MB.
                    with temp.path.open("rb") as body:
                        self.client.put_object(Bucket=self.bucket, Key=name, Body=body)
                else:
                    # Read from the file part by part (multipart above 8 MiB), never whole.
                    self.client.upload_file(str(temp.path), self.bucket, name, Config=TRANSFER)
        finally:
            temp.discard()

    def get_bytes(self, key: str) -> bytes:
        return self.open_read(key).read_all()

    def open_read(self, key: str) -> BlobStream:
        name = self._key(key)
        try:
            with _failing_as_unavailable(f"reading {key}"):
                reply = self.client.get_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(f"no blob {key!r} in s3://{self.bucket}") from None
            raise
        body = reply["Body"]
        chunks: Iterator[bytes] = body.iter_chunks(CHUNK)
        return BlobStream(int(reply["ContentLength"]), chunks, body.close)

    def exists(self, key: str) -> bool:
        try:
            with _failing_as_unavailable(f"looking up {key}"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        with _failing_as_unavailable(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_many(self, keys: Iterable[str]) -> list[str]:
        """One DeleteObjects request per 1,000 keys (S3's limit) instead of one request
        each: a checkpoint releases the envelopes of every update it holds at once."""
        names = {self._key(k): k for k in keys}
        failed: list[str] = []
        batch = list(names)
        for start in range(0, len(batch), DELETE_BATCH):
            part = batch[start : start + DELETE_BATCH]
            try:
                with _failing_as_unavailable(f"deleting {len(part)} blobs"):
                    reply = self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": n} for n in part], "Quiet": True},
                    )
            except BlobStoreUnavailableError:
                failed.extend(names[n] for n in part)
                continue
            failed.extend(
                names[e["Key"]] for e in reply.get("Errors", [])
                if e.get("Key") in names and e.get("Code") not in _MISSING
            )  # fmt: skip
        return failed

    def temp(self, limit: int) -> TempBlob:
        # A buffer: what lasts is the object in the bucket, written before any row names it.
        return TempBlob(self._tmp, limit, sync=False)

    def sweep_temp(self, older_than_s: float) -> int:
        return sweep_upload_dir(self._tmp, older_than_s)

    def keys(self, under: str = "") -> Iterator[str]:
        """Every key below `under` (a key prefix), without the store's own prefix."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + under
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"].removeprefix(self.prefix)

    def sweep_envelopes(self) -> int:
        doomed = [k for k in self.keys("jobs/") if blobkeys.LEGACY_ENVELOPE.match(k)]
        return len(doomed) - len(self.delete_many(doomed))
