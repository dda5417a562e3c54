"""The update envelope: one provider's encrypted, weighted model update for one round.

Binary layout (little-endian), format version 1:

    magic "PLNE" | version u16 | header_len u32
    fingerprint 32s | param_count u64 | chunk_count u32 | summands u32 | round u32 | weight f64
    samples u64 | scale f64 | parms_id 4xu64 | payload_len u64 | payload_sha256 32s
    preset_id, job_id, provider_id: each u16 length + UTF-8
    header_sha256 32s: SHA-256 of every header byte before it
    payload: written and read by the preset's codec (crypto/codec/): for CKKS, chunk_count
        two-polynomial ciphertexts, coefficients packed per data prime; for the plaintext
        benchmark preset, param_count float32

The header checksum catches corruption of any field (a flipped weight would silently skew
the average otherwise); the payload hash covers the ciphertexts. The header binds them to a
key (fingerprint), a job, a round and a provider, so an envelope replayed anywhere else is
refused. Validation needs only the public context and
never trusts a length or count it has not checked against the preset.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from crypto.errors import (
    BindingMismatchError,
    CiphertextParameterError,
    CryptoError,
    EnvelopeTooLargeError,
    FingerprintMismatchError,
    MalformedEnvelopeError,
    PayloadHashError,
    PresetError,
    ShapeMismatchError,
    UnsupportedVersionError,
    ValueRangeError,
)
from crypto.keys import PublicContext
from crypto.presets import Preset, get_preset
from crypto.zeropool import ZeroPool

MAGIC = b"PLNE"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_FIXED = struct.Struct("<32sQIIIdQd4QQ32s")
_MAX_ID_BYTES = 256
_DIGEST = 32


@dataclass(frozen=True)
class EnvelopeBinding:
    """What an envelope must be bound to for the server to accept it."""

    job_id: str
    round: int
    provider_id: str
    param_count: int
    # How many updates the round's sum may hold (the job's max providers); it sets the
    # largest entry one update may carry. None means the preset's default.
    summands: int | None = None

    def resolved_summands(self, preset: Preset) -> int:
        count = self.summands or preset.default_summands
        if not 1 <= count <= preset.max_summands:
            raise ValueRangeError(
                f"preset {preset.id} sums between 1 and {preset.max_summands} updates, not {count}"
            )
        return count


@dataclass(frozen=True)
class EnvelopeHeader:
    version: int
    preset_id: str
    fingerprint: str
    job_id: str
    round: int
    provider_id: str
    param_count: int
    chunk_count: int
    summands: int
    weight: float
    samples: int
    scale: float
    parms_id: tuple[int, int, int, int]
    payload_len: int
    payload_sha256: str
    header_len: int

    @property
    def binding(self) -> EnvelopeBinding:
        return EnvelopeBinding(
            self.job_id, self.round, self.provider_id, self.param_count, self.summands
        )


@dataclass(frozen=True)
class ValidatedEnvelope:
    """An envelope that passed every check, with its coefficients unpacked."""

    header: EnvelopeHeader
    # What the preset's codec adds into a sum: for CKKS uint64 (chunks, 2, k, N).
    coefficients: np.ndarray


def envelope_size(preset: Preset, param_count: int, *, id_bytes: int = 3 * _MAX_ID_BYTES) -> int:
    """Upper bound on the size of any valid envelope for `param_count` parameters."""
    return _PREFIX.size + _FIXED.size + 6 + id_bytes + _DIGEST + preset.payload_bytes(param_count)


def _encode_str(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > _MAX_ID_BYTES:
        raise ValueError(f"identifier longer than {_MAX_ID_BYTES} bytes: {value[:40]!r}…")
    return struct.pack("<H", len(raw)) + raw


def _checked_weighted(
    preset: Preset, vector: np.ndarray, binding: EnvelopeBinding, weight: float, samples: int
) -> tuple[np.ndarray, int]:
    flat = np.asarray(vector, dtype=np.float64).ravel()
    if flat.size != binding.param_count:
        raise ShapeMismatchError(
            f"update has {flat.size} parameters, the job expects {binding.param_count}"
        )
    if not (math.isfinite(weight) and 0.0 < weight <= 1.0):
        raise ValueRangeError(f"weight must be in (0, 1], got {weight}")
    if samples < 1:
        raise ValueRangeError(f"sample count must be positive, got {samples}")
    summands = binding.resolved_summands(preset)
    bound = preset.max_update_abs(summands)
    weighted = flat * weight
    if not np.all(np.isfinite(weighted)):
        raise ValueRangeError("update holds NaN or infinite values")
    peak = float(np.max(np.abs(weighted))) if weighted.size else 0.0
    if peak > bound:
        index = int(np.argmax(np.abs(weighted)))
        raise ValueRangeError(
            f"weighted update entry {index} is {weighted[index]:.4g}; preset {preset.id} "
            f"represents at most ±{bound:.4g} per update when {summands} are summed "
            f"(clip the update, lower the job's max providers or choose a wider preset)"
        )
    return weighted, summands


def encrypt_update(
    ctx: PublicContext,
    vector: np.ndarray,
    *,
    binding: EnvelopeBinding,
    weight: float,
    samples: int,
    zeros: ZeroPool | None = None,
) -> bytes:
    """Encrypt `weight * vector` under the buyer's public context into an envelope."""
    out = io.BytesIO()
    write_update(out, ctx, vector, binding=binding, weight=weight, samples=samples, zeros=zeros)
    return out.getvalue()


def _header(
    ctx: PublicContext,
    binding: EnvelopeBinding,
    *,
    param_count: int,
    summands: int,
    weight: float,
    samples: int,
    payload_len: int,
    payload_sha256: bytes,
    tail: bytes,
) -> bytes:
    """The header's bytes, its checksum last; `tail` holds the encoded identifiers."""
    preset = ctx.preset
    fixed = _FIXED.pack(
        bytes.fromhex(ctx.fingerprint),
        param_count,
        preset.chunks_for(param_count),
        summands,
        binding.round,
        weight,
        samples,
        preset.scale,
        *preset.codec.parms_id(ctx),
        payload_len,
        payload_sha256,
    )
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(fixed) + len(tail) + _DIGEST) + fixed + tail
    return head + hashlib.sha256(head).digest()


def write_update(
    out: BinaryIO,
    ctx: PublicContext,
    vector: np.ndarray,
    *,
    binding: EnvelopeBinding,
    weight: float,
    samples: int,
    zeros: ZeroPool | None = None,
    timings: dict[str, float] | None = None,
) -> int:
    """Write the envelope of `weight * vector` to the seekable `out`; returns its size.

    The preset's codec writes the payload (crypto/codec/): for CKKS, ciphertexts a batch at
    a time, so memory stays a few batches beyond the update itself whatever the model's
    size. Each ciphertext is a fresh encryption of zero plus the encoded chunk, which is
    exactly how SEAL encrypts; with `zeros` the encryptions of zero come from that pool
    (each used once) instead of being made here. `timings`, when given, accumulates seconds
    under "encode" and "encrypt", and under "fresh_zeros" how many encryptions of zero had to
    be made on the spot.
    """
    preset = ctx.preset
    weighted, summands = _checked_weighted(preset, vector, binding, weight, samples)
    if zeros is not None and zeros.fingerprint != ctx.fingerprint:
        raise CryptoError("the pool's encryptions of zero are under another public key")
    tail = _encode_str(preset.id) + _encode_str(binding.job_id) + _encode_str(binding.provider_id)
    head_len = _PREFIX.size + _FIXED.size + len(tail) + _DIGEST
    start = out.tell()
    out.write(bytes(head_len))  # the header, once the payload's hash is known
    digest = hashlib.sha256()
    payload_len = preset.codec.write_payload(out, ctx, weighted, zeros, digest, timings)
    head = _header(
        ctx,
        binding,
        param_count=weighted.size,
        summands=summands,
        weight=weight,
        samples=samples,
        payload_len=payload_len,
        payload_sha256=digest.digest(),
        tail=tail,
    )
    end = out.tell()
    out.seek(start)
    out.write(head)
    out.seek(end)
    return end - start


def _read_str(data: bytes, offset: int, end: int) -> tuple[str, int]:
    if offset + 2 > end:
        raise MalformedEnvelopeError("envelope header is truncated")
    (length,) = struct.unpack_from("<H", data, offset)
    offset += 2
    if length > _MAX_ID_BYTES or offset + length > end:
        raise MalformedEnvelopeError("envelope header holds an over-long identifier")
    try:
        return data[offset : offset + length].decode(), offset + length
    except UnicodeDecodeError:
        raise MalformedEnvelopeError("envelope identifier is not UTF-8") from None


def read_header(data: bytes) -> EnvelopeHeader:
    """Parse an envelope's header without trusting or checking its payload."""
    if len(data) < _PREFIX.size:
        raise MalformedEnvelopeError("envelope is truncated: no header")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MalformedEnvelopeError("not a Pollen update envelope (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"envelope format version {version}; this server reads version {FORMAT_VERSION}"
        )
    end = _PREFIX.size + header_len
    if header_len < _FIXED.size + _DIGEST or end > len(data):
        raise MalformedEnvelopeError("envelope header is truncated")
    if hashlib.sha256(data[: end - _DIGEST]).digest() != data[end - _DIGEST : end]:
        raise MalformedEnvelopeError("envelope header is corrupted (checksum mismatch)")
    fields = _FIXED.unpack_from(data, _PREFIX.size)
    offset = _PREFIX.size + _FIXED.size
    strings_end = end - _DIGEST
    preset_id, offset = _read_str(data, offset, strings_end)
    job_id, offset = _read_str(data, offset, strings_end)
    provider_id, offset = _read_str(data, offset, strings_end)
    if offset != strings_end:
        raise MalformedEnvelopeError("envelope header length does not match its fields")
    fp, params, chunks, summands, rnd, weight, samples, scale, p0, p1, p2, p3, plen, digest = fields
    return EnvelopeHeader(
        version=version,
        preset_id=preset_id,
        fingerprint=fp.hex(),
        job_id=job_id,
        round=rnd,
        provider_id=provider_id,
        param_count=params,
        chunk_count=chunks,
        summands=summands,
        weight=weight,
        samples=samples,
        scale=scale,
        parms_id=(p0, p1, p2, p3),
        payload_len=plen,
        payload_sha256=digest.hex(),
        header_len=end,
    )


def size_limit(preset: Preset, binding: EnvelopeBinding, max_bytes: int | None) -> int:
    """The most bytes an envelope for `binding` may take (`max_bytes` lowers it)."""
    limit = envelope_size(preset, binding.param_count)
    return limit if max_bytes is None else min(limit, max_bytes)


def _check_key(header: EnvelopeHeader, ctx: PublicContext) -> None:
    """The envelope is under the job's preset and the buyer's public key."""
    preset = ctx.preset
    try:
        if get_preset(header.preset_id) != preset:
            raise CiphertextParameterError(
                f"envelope uses preset {header.preset_id}; the job uses {preset.id}"
            )
    except PresetError as exc:
        raise CiphertextParameterError(exc.message) from None
    if header.fingerprint != ctx.fingerprint:
        raise FingerprintMismatchError(
            "envelope was encrypted under another public key "
            f"(fingerprint {header.fingerprint[:16]}…, the job's is {ctx.fingerprint[:16]}…)"
        )


def _check_binding(header: EnvelopeHeader, preset: Preset, binding: EnvelopeBinding) -> None:
    """The envelope is bound to this job, round and provider, and shaped for its sum."""
    for name in ("job_id", "round", "provider_id"):
        got, want = getattr(header, name), getattr(binding, name)
        if got != want:
            raise BindingMismatchError(f"envelope is bound to {name}={got!r}, expected {want!r}")
    if header.param_count != binding.param_count:
        raise ShapeMismatchError(
            f"envelope carries {header.param_count} parameters; the job's model has "
            f"{binding.param_count}"
        )
    try:
        summands = binding.resolved_summands(preset)
    except ValueRangeError as exc:
        raise ShapeMismatchError(exc.message) from None
    if header.summands != summands:
        raise BindingMismatchError(
            f"envelope was made for sums of {header.summands} updates, the round holds {summands}"
        )
    chunks = preset.chunks_for(binding.param_count)
    if header.chunk_count != chunks:
        raise ShapeMismatchError(f"envelope has {header.chunk_count} chunks; expected {chunks}")


def check_header(
    header: EnvelopeHeader, size: int, ctx: PublicContext, binding: EnvelopeBinding
) -> int:
    """Every check of an envelope of `size` bytes that its header alone decides; returns
    the payload's expected length."""
    preset = ctx.preset
    _check_key(header, ctx)
    _check_binding(header, preset, binding)
    expected_parms = preset.codec.parms_id(ctx)
    if header.scale != preset.scale or list(header.parms_id) != expected_parms:
        raise CiphertextParameterError(
            "ciphertexts are at the wrong level or scale for the job's preset"
        )
    if not (math.isfinite(header.weight) and 0.0 < header.weight <= 1.0):
        raise MalformedEnvelopeError(f"envelope weight must be in (0, 1], got {header.weight}")
    if header.samples < 1:
        raise MalformedEnvelopeError("envelope declares no samples")
    expected = preset.payload_bytes(binding.param_count)
    payload_len = size - header.header_len
    if header.payload_len != expected or payload_len != expected:
        raise MalformedEnvelopeError(
            f"payload is {payload_len} bytes (declared {header.payload_len}); expected {expected}"
        )
    return expected


def validate_envelope(
    data: bytes,
    ctx: PublicContext,
    binding: EnvelopeBinding,
    *,
    max_bytes: int | None = None,
) -> ValidatedEnvelope:
    """Check an untrusted envelope against the job's public context and expected binding.

    The whole envelope and its unpacked coefficients are in memory: for large models use
    `crypto.streaming.check_envelope_file`, which runs the same checks a piece at a time."""
    limit = size_limit(ctx.preset, binding, max_bytes)
    if len(data) > limit:
        raise EnvelopeTooLargeError(f"envelope is {len(data)} bytes; the limit is {limit}")
    header = read_header(data)
    check_header(header, len(data), ctx, binding)
    payload = memoryview(data)[header.header_len :]
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise PayloadHashError("payload does not match the SHA-256 in its header")
    coefficients = ctx.preset.codec.read_payload(payload, binding.param_count)
    return ValidatedEnvelope(header=header, coefficients=coefficients)
