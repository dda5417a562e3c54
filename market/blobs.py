"""Blob storage for contexts, models, envelopes and accumulators.

`BlobStore` is the interface the services use. `LocalBlobStore` (the embedded default) keeps
blobs as files under one folder; writes are atomic (temp file in the same folder, fsync,
rename) so a reader never sees half a blob and a crash never corrupts one.
`market.blobs_s3.S3BlobStore` keeps them in an S3-compatible bucket; `store_for(settings)`
picks one from `POLLEN_BLOB_URL`. Large blobs leave the store as a `BlobStream` of chunks
(`open_read`), so a model download never sits whole in the server's memory.
Envelopes and sums are parsed from a seekable file (`open_file`) and written from chunks
(`put_stream`), a piece at a time (crypto/streaming.py, crypto/sumfile.py).
Uploads are streamed into a `TempBlob` with a hard size limit before anything is parsed, and
abandoned when the sender stalls (`receive`): uvicorn itself never times out a request body
that stops arriving, so a stalled upload would otherwise keep its temp file forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio

from market import blobkeys
from market.errors import BlobStoreUnavailableError, PayloadTooLargeError, UploadStalledError

if TYPE_CHECKING:
    from market.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
CHUNK = 1024 * 1024


def check_key(key: str) -> str:
    """`key` if it is a safe relative path of plain names; ValueError otherwise."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"bad blob key {key!r}")
    return key


class BlobStream:
    """One blob being read, `size` bytes, as chunks of at most `CHUNK` bytes.

    Opened eagerly (a missing blob fails at `open_read`, before a response starts); the
    source is closed once the chunks are exhausted or `close()` is called.
    """

    def __init__(self, size: int, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.size = size
        self._chunks = chunks
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        finally:
            self.close()

    def close(self) -> None:
        self._close()

    def read_all(self) -> bytes:
        return b"".join(self)


class TempBlob:
    """An upload being received: a temp file that refuses to grow past `limit` bytes."""

    def __init__(self, directory: Path, limit: int, *, sync: bool = True) -> None:
        """`sync=False`: the file is only a buffer, read and deleted once the blob is stored
        elsewhere (S3), so `finish` need not force it to disk."""
        directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".part")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self.limit = limit
        self.size = 0
        self._sha = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise PayloadTooLargeError(
                f"upload exceeds the limit of {self.limit} bytes", limit=self.limit
            )
        self._sha.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        """All bytes received, on disk (fsync) when the file itself becomes the blob."""
        self._file.flush()
        if self.sync:
            os.fsync(self._file.fileno())
        self._file.close()

    def close(self) -> None:
        """All bytes received, for an upload read once and then deleted (no fsync)."""
        self._file.close()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def receive(chunks: AsyncIterator[bytes], upload: TempBlob, *, idle_timeout_s: float) -> None:
    """Write a request body into `upload`; 408 once no byte came for `idle_timeout_s`."""
    iterator = aiter(chunks)
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalledError(
                f"no byte of the upload arrived for {idle_timeout_s:g} s after {upload.size} bytes"
            ) from None
        upload.write(chunk)


class BlobStore(ABC):
    """Where the service keeps large opaque bytes, addressed by slash-separated keys."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_temp(self, key: str, temp: TempBlob) -> None:
        """Move a finished upload under `key` (the temp blob is consumed)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole blob (FileNotFoundError when absent): only for what a parser needs whole."""

    @abstractmethod
    def open_read(self, key: str) -> BlobStream:
        """The blob as a stream of chunks (FileNotFoundError when absent)."""

    @contextlib.contextmanager
    def open_file(self, key: str) -> Iterator[BinaryIO]:
        """The blob as a seekable binary file (FileNotFoundError when absent): here a local
        copy, streamed in and removed afterwards; a store of files opens its own."""
        stream = self.open_read(key)
        copy = self.temp(stream.size)
        try:
            for chunk in stream:
                copy.write(chunk)
            copy.close()
            with copy.path.open("rb") as handle:
                yield handle
        finally:
            stream.close()
            copy.discard()

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> str:
        """Store the concatenated `chunks` under `key`, never whole in memory; returns the
        blob's SHA-256 (hex)."""
        temp = self.temp(1 << 62)
        try:
            for chunk in chunks:
                temp.write(chunk)
            temp.finish()
            self.put_temp(key, temp)
            return temp.sha256
        finally:
            temp.discard()

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Iterable[str]) -> list[str]:
        """Delete every one of `keys` (absent ones are no error); the keys that could not
        be deleted. A store with a batch call overrides this."""
        failed = []
        for key in keys:
            try:
                self.delete(key)
            except (OSError, BlobStoreUnavailableError):
                failed.append(key)
        return failed

    @abstractmethod
    def temp(self, limit: int) -> TempBlob:
        """A new upload buffer (on the same storage for a folder, so `put_temp` is a rename)."""

    @abstractmethod
    def sweep_temp(self, older_than_s: float) -> int:
        """Delete upload buffers left behind by a process that died mid-upload; how many."""

    @abstractmethod
    def sweep_envelopes(self) -> int:
        """Delete individual envelopes an earlier version kept after summing them; how many."""


def sweep_upload_dir(directory: Path, older_than_s: float) -> int:
    """Delete `upload-*.part` files in `directory` untouched for `older_than_s`.

    Only stale ones: another worker on the same folder may be receiving one right now, and a
    live upload's file changes as its body arrives.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    for path in directory.glob("upload-*.part"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def _file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


class LocalBlobStore(BlobStore):
    """Blobs as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        temp = self.temp(len(data))
        try:
            temp.write(data)
            temp.finish()
            self.put_temp(key, temp)
        finally:
            temp.discard()

    def put_temp(self, key: str, temp: TempBlob) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp.path, path)
        # The rename itself must survive a crash before the DB row pointing at it commits.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open_read(self, key: str) -> BlobStream:
        handle = self._path(key).open("rb")
        size = os.fstat(handle.fileno()).st_size
        return BlobStream(size, _file_chunks(handle), handle.close)

    @contextlib.contextmanager
    def open_file(self, key: str) -> Iterator[BinaryIO]:
        with self._path(key).open("rb") as handle:
            yield handle

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def temp(self, limit: int) -> TempBlob:
        return TempBlob(self._tmp, limit)

    def sweep_temp(self, older_than_s: float) -> int:
        return sweep_upload_dir(self._tmp, older_than_s)

    def sweep_envelopes(self) -> int:
        """Every accepted update lives on inside its round's committed sum, so an envelope on
        disk is only something to steal; returns how many were removed.
        """
        removed = 0
        for path in self.root.glob(blobkeys.LEGACY_ENVELOPE_GLOB):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed


def parse_blob_url(url: str) -> tuple[str, str]:
    """`("file", folder)` or `("s3", "bucket/prefix")` from a `POLLEN_BLOB_URL` value."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"POLLEN_BLOB_URL {url!r} names no bucket (s3://bucket/prefix)")
        return "s3", f"{bucket}/{prefix.strip('/')}".rstrip("/")
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError(f"POLLEN_BLOB_URL {url!r}: a file URL needs an absolute path")
        return "file", path
    if "://" in url:
        raise ValueError(f"POLLEN_BLOB_URL {url!r}: use a folder, file:///folder or s3://bucket")
    return "file", url


def store_for(settings: Settings) -> BlobStore:
    """The blob store `settings` select: a folder by default, S3 for an `s3://` URL.

    An S3 bucket that is absent or refuses the credentials raises `BlobStoreUnavailableError`
    here, so the server stops at startup with one line rather than on the first upload.
    """
    kind, where = parse_blob_url(settings.blob_url)
    if kind == "file":
        return LocalBlobStore(Path(where))
    from market.blobs_s3 import S3BlobStore  # boto3 loads only for S3 deployments

    bucket, _, prefix = where.partition("/")
    return S3BlobStore.connect(
        bucket=bucket,
        prefix=prefix,
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        region=settings.s3_region,
        temp_dir=settings.data_dir / "upload-tmp",
    )
