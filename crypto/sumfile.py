"""The aggregate format, and aggregates read from a file a piece at a time.

Aggregate layout (little-endian), format version 1:

    magic "PLNA" | version u16 | header_len u32
    fingerprint 32s | param_count u64 | chunk_count u32 | summands u32 | round u32 | count u32
    weight_sum f64 | samples_sum u64 | payload_sha256 32s
    preset_id, job_id: u16 length + UTF-8 | provider count u32, each u16 length + UTF-8
    payload: the codec's sum: for CKKS the summed ciphertexts, packed like an envelope's;
        for the plaintext benchmark preset, param_count float64

A sum is as large as the model (320 MB of coefficients for 20M parameters), so the server
merges a stored partial sum and the buyer decrypts one from its file (`CheckedSum`): the
header first, then the payload's hash over one piece at a time (`Piece`, crypto/codec/base.py),
then the pieces again, each compared with its digest from the first pass before it is used.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from crypto.codec.base import Piece
from crypto.errors import AggregateError, PresetError
from crypto.keys import PublicContext
from crypto.presets import Preset, get_preset
from crypto.streaming import read_exactly

MAGIC = b"PLNA"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_FIXED = struct.Struct("<32sQIIIIdQ32s")
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<H")


def _pack_str(value: str) -> bytes:
    raw = value.encode()
    return _LENGTH.pack(len(raw)) + raw


class _Reader:
    """Bounds-checked reads over untrusted bytes; every failure is an AggregateError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, fmt: struct.Struct) -> tuple[object, ...]:
        if self.offset + fmt.size > len(self.data):
            raise AggregateError("aggregate is truncated")
        values = fmt.unpack_from(self.data, self.offset)
        self.offset += fmt.size
        return values

    def text(self) -> str:
        (length,) = self.take(_LENGTH)
        assert isinstance(length, int)
        raw = self.data[self.offset : self.offset + length]
        if len(raw) != length:
            raise AggregateError("aggregate is truncated")
        self.offset += length
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise AggregateError("aggregate holds a non-UTF-8 identifier") from None


@dataclass(frozen=True)
class SumHeader:
    """What an aggregate says of its sum; the payload is `payload_len` bytes from
    `payload_start` and hashes to `digest`."""

    preset: Preset
    fingerprint: str
    job_id: str
    round: int
    param_count: int
    summands: int
    count: int
    weight_sum: float
    samples_sum: int
    provider_ids: list[str]
    digest: bytes
    payload_start: int

    @property
    def payload_len(self) -> int:
        return self.preset.codec.sum_bytes(self.param_count)


def pack_header(head: SumHeader) -> bytes:
    """An aggregate's header (`head.payload_start` is not stored: it follows)."""
    fixed = _FIXED.pack(
        bytes.fromhex(head.fingerprint),
        head.param_count,
        head.preset.chunks_for(head.param_count),
        head.summands,
        head.round,
        head.count,
        head.weight_sum,
        head.samples_sum,
        head.digest,
    )
    tail = _pack_str(head.preset.id) + _pack_str(head.job_id)
    tail += _COUNT.pack(len(head.provider_ids))
    tail += b"".join(_pack_str(p) for p in head.provider_ids)
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(fixed) + len(tail)) + fixed + tail


def parse_header(data: bytes, ctx: PublicContext | None = None) -> SumHeader:
    """The header at the start of `data` (which may stop at the header's end), checked
    against `ctx` when given."""
    reader = _Reader(data)
    magic, version, header_len = reader.take(_PREFIX)
    if magic != MAGIC:
        raise AggregateError("not a Pollen aggregate (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise AggregateError(f"aggregate format version {version} is not supported")
    fp, params, chunks, summands, rnd, count, wsum, ssum, digest = reader.take(_FIXED)
    try:
        preset = get_preset(reader.text())
    except PresetError as exc:
        raise AggregateError(exc.message) from None
    job_id = reader.text()
    (n_providers,) = reader.take(_COUNT)
    assert isinstance(n_providers, int) and isinstance(count, int)
    assert isinstance(summands, int)
    if not 1 <= summands <= preset.max_summands:
        raise AggregateError("aggregate declares an impossible number of summands")
    if n_providers != count or count > summands:
        raise AggregateError("aggregate provider list does not match its count")
    providers = [reader.text() for _ in range(n_providers)]
    assert isinstance(header_len, int) and isinstance(params, int)
    if reader.offset != _PREFIX.size + header_len:
        raise AggregateError("aggregate header length does not match its fields")
    assert isinstance(fp, bytes) and isinstance(digest, bytes)
    if ctx is not None and (fp.hex() != ctx.fingerprint or preset != ctx.preset):
        raise AggregateError("aggregate was made under another public context")
    if chunks != preset.chunks_for(params):
        raise AggregateError("aggregate chunk count does not match its parameter count")
    assert isinstance(rnd, int) and isinstance(wsum, float) and isinstance(ssum, int)
    return SumHeader(
        preset, fp.hex(), job_id, rnd, params, summands, count, wsum, ssum, providers, digest,
        reader.offset,
    )  # fmt: skip


@dataclass(frozen=True)
class CheckedSum:
    """An aggregate file whose header and payload hash were checked (`open`); its pieces
    are read again on demand. The caller keeps `handle` open while it is used."""

    header: SumHeader
    handle: BinaryIO = field(repr=False, compare=False)
    pieces: tuple[Piece, ...] = field(repr=False)
    digests: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def open(cls, handle: BinaryIO, ctx: PublicContext | None = None) -> CheckedSum:
        """Check the aggregate in the seekable binary file `handle` as `from_bytes` does."""
        size = os.fstat(handle.fileno()).st_size
        handle.seek(0)
        data = read_exactly(handle, _PREFIX.size)
        if len(data) == _PREFIX.size:
            data += read_exactly(handle, min(_PREFIX.unpack_from(data)[2], size - len(data)))
        head = parse_header(data, ctx)
        if size - head.payload_start != head.payload_len:
            raise AggregateError("aggregate payload has the wrong size")
        codec = head.preset.codec
        pieces = tuple(codec.sum_pieces(head.param_count, 0, codec.sum_rows(head.param_count)))
        whole, digests = hashlib.sha256(), []
        handle.seek(head.payload_start)
        for piece in pieces:
            raw = read_exactly(handle, piece.size)
            whole.update(raw)
            digests.append(hashlib.sha256(raw).digest())
        if whole.digest() != head.digest:
            raise AggregateError("aggregate payload does not match its hash")
        return cls(head, handle, pieces, tuple(digests))

    def addends(self) -> Iterator[tuple[Piece, np.ndarray]]:
        """Each piece and its part of the sum, compared with the first pass."""
        codec = self.header.preset.codec
        self.handle.seek(self.header.payload_start)
        for piece, digest in zip(self.pieces, self.digests, strict=True):
            raw = read_exactly(self.handle, piece.size)
            if hashlib.sha256(raw).digest() != digest:
                raise AggregateError("the aggregate file changed after it was checked")
            yield piece, codec.read_sum_piece(piece, raw)

    def rows(self, first: int, count: int) -> np.ndarray:
        """Rows `first` to `first + count` of the sum (a block to decrypt)."""
        head = self.header
        codec = head.preset.codec
        out = np.empty((count, *codec.row_shape), dtype=codec.sum_dtype)
        for piece in codec.sum_pieces(head.param_count, first, count):
            self.handle.seek(head.payload_start + piece.offset)
            raw = read_exactly(self.handle, piece.size)
            if len(raw) != piece.size:
                raise AggregateError("the aggregate file changed after it was checked")
            rows = piece.rows
            at = (slice(rows.start - first, rows.stop - first), *piece.index[1:])
            out[at] = codec.read_sum_piece(piece, raw)
        return out
