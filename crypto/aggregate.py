"""Streaming aggregation on the server and decryption of the sum by the buyer.

The server adds one validated envelope at a time into a running encrypted sum, as the
preset's codec adds (crypto/codec/): for CKKS, addition of ciphertexts in NTT form is
coefficient-wise addition modulo each data prime, which is exactly what SEAL's
`Evaluator.add` computes, done on numpy arrays so that memory stays O(model) and a round
never holds more than one update at once. The buyer's decryption is flooded with fresh noise
(crypto/flooding.py) before anyone sees it.

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
import struct
from dataclasses import dataclass

import numpy as np

from crypto.envelope import EnvelopeBinding, ValidatedEnvelope
from crypto.errors import AggregateError, PresetError
from crypto.keys import BuyerKeys, PublicContext
from crypto.presets import Preset, get_preset

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

    def add(self, update: ValidatedEnvelope) -> None:
        """Add one validated update; refuses anything that does not belong in this sum."""
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
        self.preset.codec.add_into(self.coefficients, update.coefficients)
        self.count += 1
        self.weight_sum += h.weight
        self.samples_sum += h.samples
        self.provider_ids.append(h.provider_id)

    def merge(self, other: Accumulator) -> None:
        """Add another sum of the same round into this one (sums are associative).

        Refuses a sum under another key, job, round or size, one that shares a provider
        with this one, or a total beyond `summands` updates."""
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
        payload = data[reader.offset :]
        expected = preset.codec.sum_bytes(params)
        if len(payload) != expected:
            raise AggregateError("aggregate payload has the wrong size")
        if hashlib.sha256(payload).digest() != digest:
            raise AggregateError("aggregate payload does not match its hash")
        coeffs = preset.codec.unpack_sum(payload, params)
        assert isinstance(rnd, int) and isinstance(wsum, float) and isinstance(ssum, int)
        return cls(
            preset=preset,
            fingerprint=fp.hex(),
            job_id=job_id,
            round=rnd,
            param_count=params,
            summands=summands,
            coefficients=coeffs,
            count=count,
            weight_sum=wsum,
            samples_sum=ssum,
            provider_ids=providers,
        )


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


def _decrypt_exact(keys: BuyerKeys, acc: Accumulator) -> np.ndarray:
    """The sum exactly as the secret key decrypts it (float64, `param_count` values).

    Never return this from a public function: published, it reveals the secret key.
    """
    if acc.fingerprint != keys.fingerprint:
        raise AggregateError("aggregate was encrypted under another key than this buyer's")
    if acc.count == 0:
        raise AggregateError("aggregate holds no updates")
    return acc.preset.codec.decrypt_exact(keys, acc.coefficients, acc.param_count)
