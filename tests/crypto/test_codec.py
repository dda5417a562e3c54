"""Each scheme's codec on its own: a vector encrypts, adds and decrypts back as it always has."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from crypto import (
    PLAIN_PRESET_ID,
    PRESETS,
    BuyerKeys,
    CryptoError,
    EnvelopeBinding,
    Preset,
    PresetError,
    PublicContext,
    encrypt_update,
    read_header,
    validate_envelope,
)
from crypto.codec import CkksCodec, Codec, PlainCodec

ERROR_BOUND = 1e-5  # the CKKS tolerance tests/crypto/test_aggregate.py holds sums to
P = 5000  # three ciphertexts at N = 2048, the last one partly filled
WEIGHTS = (1.0, 0.5, 0.25)


def _updates() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(0, 0.02, P) for _ in WEIGHTS]


def _round_trip(ctx: PublicContext, keys: BuyerKeys) -> tuple[np.ndarray, np.ndarray]:
    """Encrypt each weighted update, add the payloads, decrypt: (exact, as the buyer sees it)."""
    codec = ctx.preset.codec
    total = codec.zero_sum(P)
    for x, w in zip(_updates(), WEIGHTS, strict=True):
        out, digest = io.BytesIO(), hashlib.sha256()
        size = codec.write_payload(out, ctx, w * x, None, digest, None)
        payload = out.getvalue()
        assert size == len(payload) == codec.payload_bytes(P)
        assert digest.digest() == hashlib.sha256(payload).digest()
        codec.add_into(total, codec.read_payload(memoryview(payload), P))
    stored = codec.pack_sum(total)
    assert len(stored) == codec.sum_bytes(P)
    exact = codec.decrypt_exact(keys, codec.unpack_sum(stored, P), P)
    return exact, codec.flood(exact)


def test_every_preset_holds_its_schemes_codec() -> None:
    """Presets choose their codec once, by scheme; an unknown scheme is refused by name."""
    kinds = {p.id: type(p.codec) for p in PRESETS.values()}
    assert kinds[PLAIN_PRESET_ID] is PlainCodec
    assert all(kind is CkksCodec for pid, kind in kinds.items() if pid != PLAIN_PRESET_ID)
    assert all(isinstance(p.codec, Codec) and p.codec.preset is p for p in PRESETS.values())
    with pytest.raises(PresetError, match="known schemes: ckks, plain"):
        Preset(
            id="bfv-v1",
            poly_modulus_degree=2048,
            coeff_mod_bit_sizes=(40, 14),
            scale_bits=31,
            default_summands=16,
            scheme="bfv",
        )


def test_plain_codec_round_trips_exactly(keys: BuyerKeys, public: PublicContext) -> None:
    """Plaintext: the sum is exactly the float64 sum of the float32-rounded weighted updates."""
    plain = public.for_preset(PLAIN_PRESET_ID)
    exact, seen = _round_trip(plain, keys)
    want = np.zeros(P)
    for x, w in zip(_updates(), WEIGHTS, strict=True):
        want += (w * x).astype(np.float32).astype(np.float64)
    assert np.array_equal(exact, want)
    assert np.array_equal(seen, exact)  # nothing hidden, nothing flooded


def test_ckks_codec_round_trips_within_tolerance(keys: BuyerKeys, public: PublicContext) -> None:
    """CKKS: the decrypted sum is within 1e-5 of the weighted sum, flooded on top."""
    exact, seen = _round_trip(public, keys)
    want = sum(w * x for x, w in zip(_updates(), WEIGHTS, strict=True))
    assert exact.shape == seen.shape == (P,)
    assert np.max(np.abs(exact - want)) < ERROR_BOUND
    assert np.max(np.abs(seen - want)) < ERROR_BOUND
    assert not np.array_equal(seen, exact)  # every decryption carries fresh noise


@pytest.mark.parametrize("plaintext", [False, True])
def test_codec_payload_is_the_envelopes(public: PublicContext, plaintext: bool) -> None:
    """An envelope carries the codec's payload and parms id after its header, unchanged."""
    ctx = public.for_preset(PLAIN_PRESET_ID) if plaintext else public
    x = _updates()[0]
    binding = EnvelopeBinding("j", 1, "p0", P, 3)
    envelope = encrypt_update(ctx, x, binding=binding, weight=0.5, samples=7)
    header = read_header(envelope)
    payload = envelope[header.header_len :]
    assert list(header.parms_id) == ctx.preset.codec.parms_id(ctx)
    assert len(payload) == ctx.preset.codec.payload_bytes(P)
    coefficients = ctx.preset.codec.read_payload(memoryview(payload), P)
    assert np.array_equal(validate_envelope(envelope, ctx, binding).coefficients, coefficients)
    if plaintext:
        assert payload == (0.5 * x).astype("<f4").tobytes()
        assert header.parms_id == (0, 0, 0, 0)


def test_plain_codec_makes_no_zeros(public: PublicContext) -> None:
    """The plaintext codec refuses to encrypt zeros: it has no ciphertexts to hide values in."""
    plain = public.for_preset(PLAIN_PRESET_ID)
    with pytest.raises(CryptoError, match="does not encrypt"):
        plain.preset.codec.encrypt_zeros(plain, public.encryptor, 1)
