"""Streaming aggregation on the server and decryption of the sum by the buyer.

The server adds one validated envelope at a time into a running encrypted sum, as the
preset's codec adds (crypto/codec/): for CKKS, addition of ciphertexts in NTT form is
coefficient-wise addition modulo each data prime, which is exactly what SEAL's
`Evaluator.add` computes, done on numpy arrays so that memory stays O(model) and a round
never holds more than one update at once. An update checked from its file
(crypto/streaming.py) is added a piece at a time, so the sum and one piece are all a process
holds for it. The buyer's decryption is flooded with fresh noise (crypto/flooding.py) before
anyone sees it; `decrypt_aggregate_file` decrypts from a file a block of ciphertexts at a
time into one float32 result.

Aggregate layout (little-endian), format version 1:

    magic "PLNA" | version u16 | header_len u32
    fingerprint 32s | param_count u64 | chunk_count u32 | summands u32 | round u32 | count u32
    weight_sum f64 | samples_sum u64 | payload_sha256 32s
    preset_id, job_id: u16 length + UTF-8 | provider count u32, each u16 length + UTF-8
    payload: the codec's sum: for CKKS the summed ciphertexts, packed like an envelope's;
        for the plaintext benchmark preset, param_count float64
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from crypto.codec.base import PIECE_BYTES
from crypto.envelope import EnvelopeBinding, ValidatedEnvelope
from crypto.errors import AggregateError, PresetError
from crypto.keys import BuyerKeys, PublicContext
from crypto.presets import Preset, get_preset
from crypto.streaming import CheckedEnvelope, read_exactly

MAGIC = b"PLNA"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_FIXED = struct.Struct("<32sQIIIIdQ32s")


def _pack_str(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<H", len(raw)) + raw


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
        (length,) = self.take(struct.Struct("<H"))
        assert isinstance(length, int)
        raw = self.data[self.offset : self.offset + length]
        if len(raw) != length:
            raise AggregateError("aggregate is truncated")
        self.offset += length
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise AggregateError("aggregate holds a non-UTF-8 identifier") from None


class Accumulator:
    """The running encrypted sum of one round's updates."""

    def __init__(
        self,
        *,
        preset: Preset,
        fingerprint: str,
        job_id: str,
        round: int,
        param_count: int,
        summands: int,
        coefficients: np.ndarray,
        count: int = 0,
        weight_sum: float = 0.0,
        samples_sum: int = 0,
        provider_ids: list[str] | None = None,
    ) -> None:
        self.preset = preset
        self.fingerprint = fingerprint
        self.job_id = job_id
        self.round = round
        self.param_count = param_count
        self.summands = summands
        self.coefficients = coefficients
        self.count = count
        self.weight_sum = weight_sum
        self.samples_sum = samples_sum
        self.provider_ids = list(provider_ids or [])
        # Why this sum can no longer be trusted (an update failed half-way in), or None.
        self.void: str | None = None

    def _usable(self) -> None:
        if self.void is not None:
            raise AggregateError(f"this sum is void: {self.void}")

    @classmethod
    def empty(
        cls,
        ctx: PublicContext,
        *,
        job_id: str,
        round: int,
        param_count: int,
        summands: int | None = None,
    ) -> Accumulator:
        preset = ctx.preset
        binding = EnvelopeBinding(job_id, round, "", param_count, summands)
        return cls(
            preset=preset,
            fingerprint=ctx.fingerprint,
            job_id=job_id,
            round=round,
            param_count=param_count,
            summands=binding.resolved_summands(preset),
            coefficients=preset.codec.zero_sum(param_count),
        )

    def add(self, update: ValidatedEnvelope | CheckedEnvelope) -> None:
        """Add one validated update; refuses anything that does not belong in this sum.

        A checked envelope is read from its file a piece at a time. Should the file no longer
        hold what was checked, the sum is left void (every later use refuses it): the pieces
        added before cannot be taken back without keeping them."""
        self._usable()
        h = update.header
        if (h.fingerprint, h.job_id, h.round, h.param_count, h.summands) != (
            self.fingerprint,
            self.job_id,
            self.round,
            self.param_count,
            self.summands,
        ):
            raise AggregateError("update belongs to another key, job, round or model size")
        if h.provider_id in self.provider_ids:
            raise AggregateError(f"provider {h.provider_id} is already in this aggregate")
        if self.count >= self.summands:
            raise AggregateError(f"this aggregate holds at most {self.summands} updates")
        codec = self.preset.codec
        if isinstance(update, ValidatedEnvelope):
            codec.add_into(self.coefficients, update.coefficients)
        else:
            try:
                for piece, addend in update.addends():
                    codec.add_piece(self.coefficients, piece, addend)
            except Exception as exc:
                self.void = f"the update of {h.provider_id} failed half-way in ({exc})"
                raise AggregateError(self.void) from exc
        self.count += 1
        self.weight_sum += h.weight
        self.samples_sum += h.samples
        self.provider_ids.append(h.provider_id)

    def merge(self, other: Accumulator) -> None:
        """Add another sum of the same round into this one (sums are associative).

        Refuses a sum under another key, job, round or size, one that shares a provider
        with this one, or a total beyond `summands` updates."""
        self._usable()
        other._usable()
        if (other.fingerprint, other.job_id, other.round, other.param_count, other.summands) != (
            self.fingerprint,
            self.job_id,
            self.round,
            self.param_count,
            self.summands,
        ):
            raise AggregateError("sums belong to another key, job, round or model size")
        shared = set(self.provider_ids) & set(other.provider_ids)
        if shared:
            raise AggregateError(f"providers {sorted(shared)} are in both sums")
        if self.count + other.count > self.summands:
            raise AggregateError(f"this aggregate holds at most {self.summands} updates")
        self.preset.codec.add_into(self.coefficients, other.coefficients)
        self.count += other.count
        self.weight_sum += other.weight_sum
        self.samples_sum += other.samples_sum
        self.provider_ids.extend(other.provider_ids)

    def to_bytes(self) -> bytes:
        self._usable()
        payload = self.preset.codec.pack_sum(self.coefficients)
        fixed = _FIXED.pack(
            bytes.fromhex(self.fingerprint),
            self.param_count,
            self.preset.chunks_for(self.param_count),
            self.summands,
            self.round,
            self.count,
            self.weight_sum,
            self.samples_sum,
            hashlib.sha256(payload).digest(),
        )
        tail = _pack_str(self.preset.id) + _pack_str(self.job_id)
        tail += struct.pack("<I", len(self.provider_ids))
        tail += b"".join(_pack_str(p) for p in self.provider_ids)
        header_len = len(fixed) + len(tail)
        return _PREFIX.pack(MAGIC, FORMAT_VERSION, header_len) + fixed + tail + payload

    @classmethod
    def from_bytes(cls, data: bytes, ctx: PublicContext | None = None) -> Accumulator:
        """Parse a persisted aggregate, checking it against `ctx` when given."""
        head = _parse_head(data, ctx)
        payload = data[head.payload_start :]
        if len(payload) != head.payload_len:
            raise AggregateError("aggregate payload has the wrong size")
        if hashlib.sha256(payload).digest() != head.digest:
            raise AggregateError("aggregate payload does not match its hash")
        coeffs = head.preset.codec.unpack_sum(payload, head.param_count)
        return head.empty(coeffs)


@dataclass(frozen=True)
class _Head:
    """An aggregate's header, checked; the payload is `payload_len` bytes from
    `payload_start`."""

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

    def empty(self, coefficients: np.ndarray) -> Accumulator:
        return Accumulator(
            preset=self.preset,
            fingerprint=self.fingerprint,
            job_id=self.job_id,
            round=self.round,
            param_count=self.param_count,
            summands=self.summands,
            coefficients=coefficients,
            count=self.count,
            weight_sum=self.weight_sum,
            samples_sum=self.samples_sum,
            provider_ids=self.provider_ids,
        )


def _parse_head(data: bytes, ctx: PublicContext | None) -> _Head:
    """The header at the start of `data` (which may stop at the header's end)."""
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
    (n_providers,) = reader.take(struct.Struct("<I"))
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
    return _Head(
        preset, fp.hex(), job_id, rnd, params, summands, count, wsum, ssum, providers, digest,
        reader.offset,
    )  # fmt: skip


def _read_file_head(handle: BinaryIO, size: int, ctx: PublicContext | None) -> _Head:
    """The header of the aggregate file `handle` (`size` bytes), read no further."""
    prefix = read_exactly(handle, _PREFIX.size)
    if len(prefix) == _PREFIX.size:
        header_len = _PREFIX.unpack_from(prefix)[2]
        prefix += read_exactly(handle, min(header_len, size - _PREFIX.size))
    return _parse_head(prefix, ctx)


@dataclass(frozen=True)
class DecryptedAggregate:
    """The buyer's view of a round: the sum of weighted updates, never a single one."""

    total: np.ndarray
    count: int
    weight_sum: float
    samples_sum: int
    provider_ids: list[str]

    @property
    def average(self) -> np.ndarray:
        """Weighted average update: Σ wᵢ·δᵢ / Σ wᵢ."""
        return (self.total / self.weight_sum).astype(np.float32)


def decrypt_aggregate(keys: BuyerKeys, data: bytes) -> DecryptedAggregate:
    """Decrypt an aggregate downloaded from the marketplace with the buyer's secret key.

    The sum carries fresh noise of `preset.flood_sigma` per value (crypto/flooding.py), so
    publishing anything computed from it does not give the buyer's secret key away.
    """
    acc = Accumulator.from_bytes(data)
    exact = _decrypt_exact(keys, acc)
    total = acc.preset.codec.flood(exact)
    return DecryptedAggregate(
        total=total.astype(np.float32),
        count=acc.count,
        weight_sum=acc.weight_sum,
        samples_sum=acc.samples_sum,
        provider_ids=acc.provider_ids,
    )


def decrypt_aggregate_file(keys: BuyerKeys, path: str | Path) -> DecryptedAggregate:
    """`decrypt_aggregate` of the aggregate in the file at `path`, a block of ciphertexts at
    a time: memory is the float32 result and one block's scratch, never the encrypted sum or
    its float64 decryption. Each block is flooded as it is decrypted (fresh noise per value,
    the same distribution as `decrypt_aggregate`'s)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = _read_file_head(handle, size, None)
        if size - head.payload_start != head.payload_len:
            raise AggregateError("aggregate payload has the wrong size")
        digest = hashlib.sha256()
        while block := handle.read(PIECE_BYTES):
            digest.update(block)
        if digest.digest() != head.digest:
            raise AggregateError("aggregate payload does not match its hash")
        _check_decryptable(keys, head.fingerprint, head.count)
        total = np.empty(head.param_count, dtype=np.float32)
        codec = head.preset.codec
        rows, per, width = (
            codec.sum_rows(head.param_count),
            codec.rows_per_block(),
            codec.row_values,
        )
        for first in range(0, rows, per):
            count = min(per, rows - first)
            coeffs = _read_rows(handle, head, first, count)
            start = first * width
            values = min(count * width, head.param_count - start)
            total[start : start + values] = codec.flood(codec.decrypt_exact(keys, coeffs, values))
    return DecryptedAggregate(
        total=total,
        count=head.count,
        weight_sum=head.weight_sum,
        samples_sum=head.samples_sum,
        provider_ids=head.provider_ids,
    )


def _read_rows(handle: BinaryIO, head: _Head, first: int, count: int) -> np.ndarray:
    """Rows `first` to `first + count` of the sum in the aggregate file `handle`."""
    codec = head.preset.codec
    out = np.empty((count, *codec.row_shape), dtype=codec.sum_dtype)
    for piece in codec.sum_pieces(head.param_count, first, count):
        handle.seek(head.payload_start + piece.offset)
        raw = read_exactly(handle, piece.size)
        if len(raw) != piece.size:
            raise AggregateError("aggregate is truncated")
        rows = piece.rows
        out[(slice(rows.start - first, rows.stop - first), *piece.index[1:])] = (
            codec.read_sum_piece(piece, raw)
        )
    return out


def _check_decryptable(keys: BuyerKeys, fingerprint: str, count: int) -> None:
    if fingerprint != keys.fingerprint:
        raise AggregateError("aggregate was encrypted under another key than this buyer's")
    if count == 0:
        raise AggregateError("aggregate holds no updates")


def _decrypt_exact(keys: BuyerKeys, acc: Accumulator) -> np.ndarray:
    """The sum exactly as the secret key decrypts it (float64, `param_count` values).

    Never return this from a public function: published, it reveals the secret key.
    """
    _check_decryptable(keys, acc.fingerprint, acc.count)
    return acc.preset.codec.decrypt_exact(keys, acc.coefficients, acc.param_count)
