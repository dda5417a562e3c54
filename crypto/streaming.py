"""Envelopes checked and added from a file, a piece at a time, never whole in memory.

An envelope is as large as its update (200 MB for 20M parameters) and its unpacked
coefficients larger still, so the server reads it from the file the upload was streamed to,
in two passes that each hold one piece (`Piece`, about `PIECE_BYTES`: a fixed number of
ciphertexts of one prime) beside the running sum:

1. `check_envelope_file` runs every check `validate_envelope` runs, with the same errors and
   messages: the header first, then the payload piece by piece, each hashed and checked to
   be what an honest encryption makes. The payload's SHA-256 is compared at the end, and a
   hash mismatch is reported before a malformed piece, as the bytes path reports them.
   Nothing is added in this pass, so a refused envelope leaves every sum exactly as it was.
2. `Accumulator.add(checked)` reads the file again and adds it piece by piece. Each piece's
   own SHA-256 from the first pass is compared before the piece is added: a file changed
   between the passes is refused, and the half-added sum is then void (crypto/aggregate.py).

The caller owns the file handle and keeps it open while the checked envelope is used; on
POSIX an open file stays readable after it is renamed or unlinked.

`stream_envelope` is the one-pass form for a sum that is thrown away whole on any error (a
group's sum rebuilt from stored envelopes): the header is checked first, then each piece is
hashed and checked as it is added, and the payload's SHA-256 is compared before the last
piece counts. A bad envelope therefore voids that sum (`Accumulator.add` raises) instead of
being refused before it; in exchange it is read once, straight from its stream, with no
local copy, second read or second unpacking.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from crypto.codec.base import Piece
from crypto.envelope import (
    _PREFIX,
    EnvelopeBinding,
    EnvelopeHeader,
    check_header,
    read_header,
    size_limit,
)
from crypto.errors import (
    CryptoError,
    EnvelopeTooLargeError,
    MalformedEnvelopeError,
    PayloadHashError,
)
from crypto.keys import PublicContext
from crypto.presets import Preset


def read_exactly(handle: BinaryIO, size: int) -> bytes:
    """`size` bytes from `handle`, fewer only at the end of the file."""
    parts, left = [], size
    while left:
        part = handle.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True)
class CheckedEnvelope:
    """An envelope file that passed every check; its addends are read again on demand."""

    header: EnvelopeHeader
    preset: Preset
    handle: BinaryIO = field(repr=False, compare=False)
    pieces: tuple[Piece, ...] = field(repr=False)
    # SHA-256 of each piece as the first pass read it.
    digests: tuple[bytes, ...] = field(repr=False)

    def addends(self) -> Iterator[tuple[Piece, np.ndarray]]:
        """Each piece and its addends, read from the file again and compared with the first
        pass; raises CryptoError when the file no longer holds what was checked."""
        codec = self.preset.codec
        self.handle.seek(self.header.header_len)
        for piece, digest in zip(self.pieces, self.digests, strict=True):
            raw = read_exactly(self.handle, piece.size)
            if len(raw) != piece.size or hashlib.sha256(raw).digest() != digest:
                raise CryptoError("the envelope file changed after it was checked")
            yield piece, codec.read_payload_piece(piece, raw)


def _file_size(handle: BinaryIO) -> int:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return size


def _read_head(handle: BinaryIO, size: int) -> EnvelopeHeader:
    """The header, parsed from no more bytes than it claims (and the file holds)."""
    prefix = read_exactly(handle, _PREFIX.size)
    if len(prefix) == _PREFIX.size:
        header_len = _PREFIX.unpack_from(prefix)[2]
        prefix += read_exactly(handle, min(header_len, size - _PREFIX.size))
    return read_header(prefix)


def check_envelope_file(
    handle: BinaryIO,
    ctx: PublicContext,
    binding: EnvelopeBinding,
    *,
    max_bytes: int | None = None,
) -> CheckedEnvelope:
    """Check the untrusted envelope in the seekable binary file `handle` as
    `validate_envelope` checks bytes, reading one piece of its payload at a time."""
    preset = ctx.preset
    size = _file_size(handle)
    limit = size_limit(preset, binding, max_bytes)
    if size > limit:
        raise EnvelopeTooLargeError(f"envelope is {size} bytes; the limit is {limit}")
    header = _read_head(handle, size)
    check_header(header, size, ctx, binding)
    codec = preset.codec
    pieces = tuple(codec.payload_pieces(binding.param_count))
    whole = hashlib.sha256()
    digests = []
    malformed: CryptoError | None = None
    handle.seek(header.header_len)
    for piece in pieces:
        raw = read_exactly(handle, piece.size)
        if len(raw) != piece.size:
            raise MalformedEnvelopeError("the envelope file shrank while it was read")
        whole.update(raw)
        digests.append(hashlib.sha256(raw).digest())
        if malformed is None:
            try:
                codec.read_payload_piece(piece, raw)
            except CryptoError as exc:
                # Reported after the hash, as the bytes path reports it.
                malformed = exc
    if whole.hexdigest() != header.payload_sha256:
        raise PayloadHashError("payload does not match the SHA-256 in its header")
    if malformed is not None:
        raise malformed
    return CheckedEnvelope(header, preset, handle, pieces, tuple(digests))


class _ChunkReader:
    """`read(n)` over an iterator of byte chunks (a blob's body as it arrives)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = memoryview(b"")

    def read(self, size: int) -> bytes:
        parts, left = [], size
        while left:
            if not self._buf:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buf = memoryview(chunk)
            part = self._buf[:left]
            self._buf = self._buf[len(part) :]
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


@dataclass(frozen=True)
class StreamedEnvelope:
    """An envelope whose header passed every check and whose payload is checked while it is
    added, read once from its stream (`stream_envelope`)."""

    header: EnvelopeHeader
    preset: Preset
    reader: _ChunkReader = field(repr=False, compare=False)
    pieces: tuple[Piece, ...] = field(repr=False)

    def addends(self) -> Iterator[tuple[Piece, np.ndarray]]:
        """Each piece and its addends, checked as `check_envelope_file` checks them; raises
        CryptoError (before yielding the last piece) when the payload is not the one its
        header hashes, is malformed or does not end where it should."""
        codec = self.preset.codec
        whole = hashlib.sha256()
        last = len(self.pieces) - 1
        for i, piece in enumerate(self.pieces):
            raw = self.reader.read(piece.size)
            if len(raw) != piece.size:
                raise MalformedEnvelopeError("the envelope is shorter than its header says")
            whole.update(raw)
            if i == last:
                if self.reader.read(1):
                    raise MalformedEnvelopeError("the envelope is longer than its header says")
                if whole.hexdigest() != self.header.payload_sha256:
                    raise PayloadHashError("payload does not match the SHA-256 in its header")
            yield piece, codec.read_payload_piece(piece, raw)


def stream_envelope(
    chunks: Iterable[bytes], size: int, ctx: PublicContext, binding: EnvelopeBinding
) -> StreamedEnvelope:
    """The envelope of `size` bytes arriving as `chunks`, its header checked as
    `check_envelope_file` checks it; its payload is checked by `addends` as it is added."""
    preset = ctx.preset
    limit = size_limit(preset, binding, None)
    if size > limit:
        raise EnvelopeTooLargeError(f"envelope is {size} bytes; the limit is {limit}")
    reader = _ChunkReader(chunks)
    prefix = reader.read(_PREFIX.size)
    if len(prefix) == _PREFIX.size:
        header_len = _PREFIX.unpack_from(prefix)[2]
        prefix += reader.read(min(header_len, size - _PREFIX.size))
    header = read_header(prefix)
    check_header(header, size, ctx, binding)
    pieces = tuple(preset.codec.payload_pieces(binding.param_count))
    return StreamedEnvelope(header, preset, reader, pieces)
