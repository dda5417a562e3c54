"""Streaming aggregation and decryption: the buyer gets the sum, within the error bound."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import (
    Accumulator,
    AggregateError,
    BuyerKeys,
    CiphertextParameterError,
    EnvelopeBinding,
    PublicContext,
    decrypt_aggregate,
    encrypt_update,
    validate_envelope,
)
from crypto.sealio import array_to_ciphertext, ciphertext_to_array

ERROR_BOUND = 1e-5


def _aggregate(
    public: PublicContext, updates: list[np.ndarray], weights: list[float], summands: int
) -> Accumulator:
    p = updates[0].size
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=p, summands=summands)
    for i, (x, w) in enumerate(zip(updates, weights, strict=True)):
        binding = EnvelopeBinding("j", 1, f"p{i}", p, summands)
        env = encrypt_update(public, x, binding=binding, weight=w, samples=max(1, int(w * 5000)))
        acc.add(validate_envelope(env, public, binding))
    return acc


def test_round_trip_single_update(keys: BuyerKeys, public: PublicContext) -> None:
    """One update encrypts, aggregates and decrypts back to itself."""
    x = np.random.default_rng(0).normal(0, 0.01, 5000).astype(np.float32)
    out = decrypt_aggregate(keys, _aggregate(public, [x], [1.0], 2).to_bytes())
    assert out.count == 1 and out.provider_ids == ["p0"]
    assert np.max(np.abs(out.total - x)) < ERROR_BOUND


@settings(max_examples=12, deadline=None)
@given(
    size=st.integers(1, 12_000),
    providers=st.integers(2, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_error_bound(
    keys: BuyerKeys, public: PublicContext, size: int, providers: int, seed: int
) -> None:
    """The decrypted sum of updates ~N(0, 0.01) is within 1e-5 for any size and provider count."""
    rng = np.random.default_rng(seed)
    updates = [rng.normal(0, 0.01, size).astype(np.float32) for _ in range(providers)]
    acc = _aggregate(public, updates, [1.0] * providers, providers)
    out = decrypt_aggregate(keys, acc.to_bytes())
    expected = np.sum(np.stack(updates).astype(np.float64), axis=0)
    assert out.total.shape == (size,)
    assert np.max(np.abs(out.total - expected)) < ERROR_BOUND


@settings(max_examples=8, deadline=None)
@given(
    samples=st.lists(st.integers(50, 5000), min_size=2, max_size=10),
    seed=st.integers(0, 2**32 - 1),
)
def test_weighted_average_error_bound(
    keys: BuyerKeys, public: PublicContext, samples: list[int], seed: int
) -> None:
    """With 50 to 5,000 samples per provider the weighted average meets the bound."""
    rng = np.random.default_rng(seed)
    updates = [rng.normal(0, 0.01, 4096).astype(np.float32) for _ in samples]
    norm = max(samples)
    weights = [n / norm for n in samples]
    out = decrypt_aggregate(keys, _aggregate(public, updates, weights, len(samples)).to_bytes())
    expected = sum(n * u.astype(np.float64) for n, u in zip(samples, updates, strict=True))
    expected /= sum(samples)
    assert out.weight_sum == pytest.approx(sum(weights))
    assert np.max(np.abs(out.average - expected)) < ERROR_BOUND


def test_sum_at_the_range_edge_does_not_wrap(keys: BuyerKeys, public: PublicContext) -> None:
    """Updates at the largest allowed magnitude still sum correctly: no silent wrap-around."""
    summands = 4
    peak = public.preset.max_update_abs(summands) * 0.999
    x = np.full(4096, peak, dtype=np.float32)
    out = decrypt_aggregate(
        keys, _aggregate(public, [x] * summands, [1.0] * summands, summands).to_bytes()
    )
    assert np.max(np.abs(out.total - summands * x.astype(np.float64))) < 1e-3


def test_numpy_add_equals_seal_add(keys: BuyerKeys, public: PublicContext) -> None:
    """The server's modular add gives exactly the coefficients SEAL's Evaluator.add gives."""
    rng = np.random.default_rng(5)
    evaluator = seal.Evaluator(keys.seal_context)
    parms = list(keys.seal_context.first_parms_id())
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=2048, summands=3)
    total = None
    for i in range(3):
        binding = EnvelopeBinding("j", 1, f"p{i}", 2048, 3)
        x = rng.normal(0, 0.01, 2048).astype(np.float32)
        update = validate_envelope(
            encrypt_update(public, x, binding=binding, weight=1.0, samples=1), public, binding
        )
        acc.add(update)
        ct = array_to_ciphertext(
            update.coefficients[0], keys.seal_context, parms_id=parms, scale=public.preset.scale
        )
        if total is None:
            total = ct
        else:
            evaluator.add_inplace(total, ct)
    assert total is not None
    assert np.array_equal(ciphertext_to_array(total), acc.coefficients[0])


def test_accumulator_refuses_duplicates_and_overflow(public: PublicContext) -> None:
    """A provider can't be added twice, nor more updates than the round's summands."""
    x = np.zeros(100, dtype=np.float32)
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=100, summands=2)
    envs = {}
    for name in ("a", "b", "c"):
        binding = EnvelopeBinding("j", 1, name, 100, 2)
        envs[name] = validate_envelope(
            encrypt_update(public, x, binding=binding, weight=1.0, samples=1), public, binding
        )
    acc.add(envs["a"])
    with pytest.raises(AggregateError, match="already"):
        acc.add(envs["a"])
    acc.add(envs["b"])
    with pytest.raises(AggregateError, match="at most 2"):
        acc.add(envs["c"])
    assert acc.count == 2 and acc.provider_ids == ["a", "b"]


def test_accumulator_persists_and_resumes(keys: BuyerKeys, public: PublicContext) -> None:
    """A serialized accumulator resumes where it stopped (a restarted server loses nothing)."""
    rng = np.random.default_rng(9)
    xs = [rng.normal(0, 0.01, 3000).astype(np.float32) for _ in range(3)]
    acc = _aggregate(public, xs[:2], [1.0, 1.0], 3)
    resumed = Accumulator.from_bytes(acc.to_bytes(), public)
    assert resumed.count == 2 and resumed.provider_ids == ["p0", "p1"]
    binding = EnvelopeBinding("j", 1, "p2", 3000, 3)
    resumed.add(
        validate_envelope(
            encrypt_update(public, xs[2], binding=binding, weight=1.0, samples=1), public, binding
        )
    )
    out = decrypt_aggregate(keys, resumed.to_bytes())
    assert np.max(np.abs(out.total - np.sum(xs, axis=0))) < ERROR_BOUND


def test_aggregate_memory_is_model_sized(public: PublicContext) -> None:
    """The running sum is one model's worth of coefficients, whatever the provider count."""
    acc = _aggregate(public, [np.zeros(5000, np.float32)] * 6, [1.0] * 6, 8)
    assert acc.coefficients.nbytes == public.preset.chunks_for(5000) * 2 * 2048 * 8


def test_tampered_or_foreign_aggregate_refused(
    keys: BuyerKeys, public: PublicContext, other_public: PublicContext
) -> None:
    """A damaged aggregate, or one under another key, is refused by parser and decryptor."""
    blob = _aggregate(public, [np.zeros(100, np.float32)], [1.0], 2).to_bytes()
    broken = bytearray(blob)
    broken[-3] ^= 0x10
    with pytest.raises(AggregateError, match="hash"):
        Accumulator.from_bytes(bytes(broken), public)
    with pytest.raises(AggregateError):
        Accumulator.from_bytes(blob[:50], public)
    with pytest.raises(AggregateError, match="another public context"):
        Accumulator.from_bytes(blob, other_public)
    foreign = _aggregate(other_public, [np.zeros(100, np.float32)], [1.0], 2).to_bytes()
    with pytest.raises(AggregateError, match="another key"):
        decrypt_aggregate(keys, foreign)
    empty = Accumulator.empty(public, job_id="j", round=1, param_count=100).to_bytes()
    with pytest.raises(AggregateError, match="no updates"):
        decrypt_aggregate(keys, empty)


def test_plaintext_preset_is_a_faithful_baseline(keys: BuyerKeys, public: PublicContext) -> None:
    """The benchmark-only plaintext preset sums through the same envelope/accumulator path."""
    from crypto import PLAIN_PRESET_ID, PresetError, get_preset

    plain = public.for_preset(PLAIN_PRESET_ID)
    assert plain.fingerprint == public.fingerprint
    rng = np.random.default_rng(3)
    xs = [rng.normal(0, 1, 777).astype(np.float32) for _ in range(3)]
    acc = Accumulator.empty(plain, job_id="j", round=1, param_count=777, summands=3)
    for i, x in enumerate(xs):
        binding = EnvelopeBinding("j", 1, f"p{i}", 777, 3)
        env = encrypt_update(plain, x, binding=binding, weight=0.5, samples=10)
        assert len(env) < 4 * 777 + 400
        acc.add(validate_envelope(env, plain, binding))
    out = decrypt_aggregate(keys, Accumulator.from_bytes(acc.to_bytes(), plain).to_bytes())
    assert np.allclose(out.total, 0.5 * np.sum(xs, axis=0), atol=1e-5)
    with pytest.raises(PresetError, match="does not encrypt"):
        get_preset(PLAIN_PRESET_ID).check_security()
    # A plaintext envelope is never accepted by an encrypted job, nor the reverse.
    binding = EnvelopeBinding("j", 1, "p0", 777, 3)
    env = encrypt_update(plain, xs[0], binding=binding, weight=1.0, samples=1)
    with pytest.raises(CiphertextParameterError):
        validate_envelope(env, public, binding)
