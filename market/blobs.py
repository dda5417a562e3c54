"""Blob storage for contexts, models, envelopes and accumulators.

`BlobStore` is the interface the services use (an S3-compatible store can implement it later);
`LocalBlobStore` keeps blobs as files under one folder. Writes are atomic (temp file in the
same folder, fsync, rename) so a reader never sees half a blob and a crash never corrupts one.
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio

from market.errors import PayloadTooLargeError, UploadStalledError

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


class TempBlob:
    """An upload being received: a temp file that refuses to grow past `limit` bytes."""

    def __init__(self, directory: Path, limit: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
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
        """All bytes received, on disk (fsync): for an upload that becomes a blob."""
        self._file.flush()
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
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def temp(self, limit: int) -> TempBlob:
        """A new upload buffer on the same storage, so `put_temp` is a rename."""


class LocalBlobStore(BlobStore):
    """Blobs as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

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

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def temp(self, limit: int) -> TempBlob:
        return TempBlob(self._tmp, limit)

    def sweep_temp(self, older_than_s: float) -> int:
        """Delete uploads left behind by a process that died mid-upload; returns how many.

        Only files untouched for `older_than_s`: another worker on the same folder may be
        receiving one right now, and a live upload's file changes as its body arrives.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._tmp.glob("upload-*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def sweep_envelopes(self) -> int:
        """Delete individual envelopes an earlier version kept after summing them.

        Every accepted update lives on inside its round's committed sum, so an envelope on
        disk is only something to steal; returns how many were removed.
        """
        removed = 0
        for path in self.root.glob("jobs/*/rounds/*/envelopes/*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed
