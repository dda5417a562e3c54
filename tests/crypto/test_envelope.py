"""Validation of untrusted envelopes: every failure typed, nothing bad ever accepted."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import (
    BindingMismatchError,
    BuyerKeys,
    CiphertextParameterError,
    EnvelopeBinding,
    EnvelopeError,
    EnvelopeTooLargeError,
    FingerprintMismatchError,
    MalformedEnvelopeError,
    PayloadHashError,
    PublicContext,
    ShapeMismatchError,
    UnsupportedVersionError,
    ValueRangeError,
    encrypt_update,
    envelope_size,
    read_header,
    validate_envelope,
)

P = 3000
BINDING = EnvelopeBinding("job-1", 2, "prov-a", P, 4)


@pytest.fixture(scope="module")
def envelope(public: PublicContext) -> bytes:
    x = np.random.default_rng(1).normal(0, 0.01, P).astype(np.float32)
    return encrypt_update(public, x, binding=BINDING, weight=0.5, samples=120)


def _reseal(raw: bytearray) -> bytes:
    """Recompute the header checksum, as a forger who edits fields on purpose would."""
    end = 10 + struct.unpack_from("<I", raw, 6)[0]
    raw[end - 32 : end] = hashlib.sha256(raw[: end - 32]).digest()
    return bytes(raw)


def _patch_fixed(data: bytes, field_offset: int, fmt: str, value: object) -> bytes:
    """Rewrite one fixed header field (offsets follow the documented layout), resealed."""
    raw = bytearray(data)
    struct.pack_into(fmt, raw, 10 + field_offset, value)
    return _reseal(raw)


def test_header_corruption_detected(envelope: bytes, public: PublicContext) -> None:
    """A header field changed without resealing (say the weight) is refused."""
    raw = bytearray(envelope)
    raw[10 + 32 + 8 + 4 + 4 + 4 + 6] ^= 0xFF  # inside the weight
    with pytest.raises(MalformedEnvelopeError, match="corrupted"):
        validate_envelope(bytes(raw), public, BINDING)


def test_valid_envelope_passes_and_header_reads_back(
    envelope: bytes, public: PublicContext
) -> None:
    """A well-formed envelope validates and its header carries the binding and weight."""
    ok = validate_envelope(envelope, public, BINDING)
    header = read_header(envelope)
    assert ok.header == header
    assert header.binding == BINDING
    assert (header.weight, header.samples, header.fingerprint) == (0.5, 120, public.fingerprint)
    assert len(envelope) <= envelope_size(public.preset, P)


@pytest.mark.parametrize("cut", [0, 3, 9, 40, 120, -1, -5000])
def test_truncated_envelope_is_malformed(envelope: bytes, public: PublicContext, cut: int) -> None:
    """Any truncation is refused as malformed."""
    with pytest.raises(MalformedEnvelopeError):
        validate_envelope(envelope[:cut], public, BINDING)


def test_garbage_bad_magic_and_version(envelope: bytes, public: PublicContext) -> None:
    """Garbage bytes and an unknown format version are refused with their own errors."""
    with pytest.raises(MalformedEnvelopeError, match="magic"):
        validate_envelope(b"GARBAGE" * 100, public, BINDING)
    future = envelope[:4] + struct.pack("<H", 99) + envelope[6:]
    with pytest.raises(UnsupportedVersionError):
        validate_envelope(future, public, BINDING)


def test_wrong_fingerprint_other_buyer(public: PublicContext, other_public: PublicContext) -> None:
    """An envelope encrypted under another buyer's key is refused."""
    x = np.zeros(P, dtype=np.float32)
    foreign = encrypt_update(other_public, x, binding=BINDING, weight=1.0, samples=1)
    with pytest.raises(FingerprintMismatchError):
        validate_envelope(foreign, public, BINDING)


@pytest.mark.parametrize(
    "change", [{"job_id": "job-2"}, {"round": 3}, {"provider_id": "prov-b"}, {"summands": 5}]
)
def test_binding_mismatch_replay(
    envelope: bytes, public: PublicContext, change: dict[str, object]
) -> None:
    """Replaying an envelope into another job, round or provider slot is refused."""
    with pytest.raises(BindingMismatchError):
        validate_envelope(envelope, public, dataclasses.replace(BINDING, **change))


def test_wrong_parameter_count(envelope: bytes, public: PublicContext) -> None:
    """An envelope for a different model size is refused as a shape mismatch."""
    with pytest.raises(ShapeMismatchError):
        validate_envelope(envelope, public, dataclasses.replace(BINDING, param_count=P - 1))
    with pytest.raises(ShapeMismatchError):
        validate_envelope(envelope, public, dataclasses.replace(BINDING, param_count=P + 5000))


def test_wrong_chunk_count(envelope: bytes, public: PublicContext) -> None:
    """A header whose chunk count disagrees with the parameter count is refused."""
    forged = _patch_fixed(envelope, 32 + 8, "<I", 7)
    with pytest.raises(ShapeMismatchError, match="chunks"):
        validate_envelope(forged, public, BINDING)


def test_wrong_scale_or_level(envelope: bytes, public: PublicContext) -> None:
    """A ciphertext declared at another scale or level (parms_id) is refused."""
    scale_at = 32 + 8 + 4 + 4 + 4 + 8 + 8
    with pytest.raises(CiphertextParameterError):
        validate_envelope(_patch_fixed(envelope, scale_at, "<d", 2.0**40), public, BINDING)
    with pytest.raises(CiphertextParameterError):
        validate_envelope(_patch_fixed(envelope, scale_at + 8, "<Q", 12345), public, BINDING)


def test_payload_tampering_detected(envelope: bytes, public: PublicContext) -> None:
    """Flipping one payload bit breaks the payload hash."""
    raw = bytearray(envelope)
    raw[-10] ^= 0x01
    with pytest.raises(PayloadHashError):
        validate_envelope(bytes(raw), public, BINDING)


def test_coefficient_outside_modulus(envelope: bytes, public: PublicContext) -> None:
    """A payload with a coefficient ≥ q (rehashed to pass the hash) is refused."""
    header = read_header(envelope)
    payload = bytearray(envelope[header.header_len :])
    payload[0:5] = b"\xff" * 5  # 2^40 - 1 > q
    digest_at = 10 + 32 + 8 + 4 + 4 + 4 + 8 + 8 + 8 + 32 + 8
    forged = bytearray(envelope[: header.header_len] + bytes(payload))
    forged[digest_at : digest_at + 32] = hashlib.sha256(payload).digest()
    with pytest.raises(CiphertextParameterError, match="outside its modulus"):
        validate_envelope(_reseal(forged), public, BINDING)


def test_oversize_refused(envelope: bytes, public: PublicContext) -> None:
    """Bytes beyond the largest valid envelope, or a caller's limit, are refused up front."""
    with pytest.raises(EnvelopeTooLargeError):
        validate_envelope(envelope + b"\x00" * 10_000, public, BINDING)
    with pytest.raises(EnvelopeTooLargeError):
        validate_envelope(envelope, public, BINDING, max_bytes=1000)


def test_unrepresentable_values_refused_before_encryption(public: PublicContext) -> None:
    """Values outside the preset's range, NaN and bad weights are refused, never wrapped."""
    bound = public.preset.max_update_abs(4)
    x = np.zeros(P, dtype=np.float32)
    x[17] = bound * 1.01
    with pytest.raises(ValueRangeError, match="entry 17"):
        encrypt_update(public, x, binding=BINDING, weight=1.0, samples=1)
    x[17] = np.nan
    with pytest.raises(ValueRangeError, match="NaN"):
        encrypt_update(public, x, binding=BINDING, weight=1.0, samples=1)
    for weight in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(ValueRangeError, match="weight"):
            encrypt_update(public, np.zeros(P), binding=BINDING, weight=weight, samples=1)
    with pytest.raises(ShapeMismatchError):
        encrypt_update(public, np.zeros(P + 1), binding=BINDING, weight=1.0, samples=1)


_FUZZ_BASE: list[bytes] = []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), flips=st.lists(st.integers(0, 10**6), max_size=4))
def test_fuzzed_bytes_never_crash_or_pass(data: bytes, flips: list[int]) -> None:
    """Random bytes, and a real envelope with random bytes flipped, only raise EnvelopeError."""
    if not _FUZZ_BASE:  # built once; kept out of the arguments so reports stay readable
        _FUZZ_BASE.append(BuyerKeys.generate().public_context().to_bytes())
    public = PublicContext.from_bytes(_FUZZ_BASE[0])
    envelope = encrypt_update(
        public, np.zeros(P, np.float32), binding=BINDING, weight=1.0, samples=1
    )
    with pytest.raises(EnvelopeError):
        validate_envelope(data, public, BINDING)
    raw = bytearray(envelope)
    for flip in flips:
        raw[flip % len(raw)] ^= 0xFF
    if bytes(raw) != envelope:
        with pytest.raises(EnvelopeError):
            validate_envelope(bytes(raw), public, BINDING)
