"""A curious operator recovers the buyer's CKKS secret key from one round: Li and Micciancio,
"On the Security of Homomorphic Encryption on Approximate Numbers", Eurocrypt 2021.

The operator holds the round's aggregate (c0, c1 in NTT form mod q) and sees the next global
model the buyer publishes. It undoes the optimizer step, multiplies by Σ weight, re-encodes
with the public context's encoder and gets a plaintext p close to the decrypted polynomial
c0 + c1·s, so s = (p − c0) / c1 pointwise mod q. Against an exact decryption the recovered
polynomial is the secret key; through `decrypt_aggregate`, whose output carries fresh noise of
rms ≥ 25 per coefficient (8× SEAL's RLWE error σ = 3.2), it is garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import tenseal.sealapi as seal

from agents.optim import FedAdam, FedAvg, ServerOptimizer
from crypto import (
    PRESETS,
    Accumulator,
    AggregateError,
    BuyerKeys,
    DecryptedAggregate,
    EnvelopeBinding,
    Preset,
    PresetError,
    PublicContext,
    decrypt_aggregate,
    encrypt_update,
    validate_envelope,
)
from crypto.aggregate import _decrypt_exact
from crypto.flooding import standard_normal
from crypto.sealio import array_to_ciphertext, ciphertext_to_array

PARAMS = 3000  # two ciphertexts; the attack needs only the first, full one
WEIGHTS = (1.0, 0.6, 0.35)  # Σ weight is in the aggregate's header: the operator knows it
SCALES = (0.001, 0.01, 0.03, 0.1)
RESIDUAL_FLOOR = 25.0  # 8 × SEAL's RLWE error σ = 3.2, per coefficient
FEDADAM = FedAdam()  # the job's hyperparameters are public


@pytest.fixture(scope="module")
def round_aggregate(public: PublicContext) -> Accumulator:
    """What the server holds once three providers' real TenSEAL ciphertexts are summed."""
    rng = np.random.default_rng(12)
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=PARAMS, summands=3)
    for i, weight in enumerate(WEIGHTS):
        binding = EnvelopeBinding("j", 1, f"p{i}", PARAMS, 3)
        update = rng.normal(0.0, 2e-3, PARAMS).astype(np.float32)
        env = encrypt_update(public, update, binding=binding, weight=weight, samples=100)
        acc.add(validate_envelope(env, public, binding))
    return Accumulator.from_bytes(acc.to_bytes(), public)


def _mod_ints(poly: np.ndarray) -> list[int]:
    return [int(c) for c in poly]


def _to_coefficients(keys: BuyerKeys, ntt_poly: list[int] | np.ndarray) -> np.ndarray:
    """Inverse NTT through SEAL, centred mod the first prime: the integer coefficients.

    `ntt_poly` holds N values per data prime, prime after prime; the coefficients must be
    smaller than the first prime (true of every polynomial looked at here).
    """
    preset = keys.preset
    q, n = preset.data_moduli[0], preset.poly_modulus_degree
    rows = np.asarray(ntt_poly, dtype=np.uint64).reshape(-1, n)
    if not rows.any():
        return np.zeros(n, dtype=np.int64)
    # Both halves of a ciphertext: SEAL refuses to transform one whose c1 is zero.
    coeffs = np.tile(rows, (2, 1, 1))
    parms = list(keys.seal_context.first_parms_id())
    cipher = array_to_ciphertext(coeffs, keys.seal_context, parms_id=parms, scale=preset.scale)
    seal.Evaluator(keys.seal_context).transform_from_ntt_inplace(cipher)
    raw = ciphertext_to_array(cipher)[0, 0].astype(np.int64)
    return np.where(raw > q // 2, raw - q, raw)


def _encode(public: PublicContext, values: np.ndarray) -> list[int]:
    """`values` (N reals) encoded as SEAL does it: two per complex slot, NTT form."""
    preset = public.preset
    plain = seal.Plaintext()
    public.encoder.encode((values[0::2] + 1j * values[1::2]).tolist(), preset.scale, plain)
    return [plain.data(i) for i in range(plain.coeff_count())]


def _secret_key_ntt(keys: BuyerKeys) -> list[int]:
    """s mod the data prime, NTT form: the first block of SEAL's key-level secret key."""
    plain = keys._context.secret_key().data.data()
    return [plain.data(i) for i in range(keys.preset.poly_modulus_degree)]


@dataclass(frozen=True)
class Recovery:
    matches: int  # coefficients of the recovered polynomial equal to the secret key's
    residual_rms: float  # re-encoded published value minus c0 + c1·s, per coefficient
    equals_key: bool


def _recover_key(
    keys: BuyerKeys, public: PublicContext, acc: Accumulator, total: np.ndarray
) -> Recovery:
    """Li–Micciancio on the first ciphertext: s = (encode(total) − c0) / c1 mod q."""
    preset = public.preset
    q, n = preset.data_moduli[0], preset.poly_modulus_degree
    p = _encode(public, np.asarray(total, dtype=np.float64)[:n])
    c0, c1 = _mod_ints(acc.coefficients[0, 0, 0]), _mod_ints(acc.coefficients[0, 1, 0])
    assert all(c1), "c1 has a zero NTT slot (probability ~N/q)"
    guess = [(pi - a) * pow(b, -1, q) % q for pi, a, b in zip(p, c0, c1, strict=True)]
    key = _secret_key_ntt(keys)
    truth = [(a + b * s) % q for a, b, s in zip(c0, c1, key, strict=True)]
    residual = _to_coefficients(keys, [(pi - t) % q for pi, t in zip(p, truth, strict=True)])
    recovered, secret = _to_coefficients(keys, guess), _to_coefficients(keys, key)
    return Recovery(
        matches=int(np.sum(recovered == secret)),
        residual_rms=float(np.sqrt(np.mean(residual.astype(np.float64) ** 2))),
        equals_key=guess == key,
    )


def _global_model(scale: float) -> np.ndarray:
    return np.random.default_rng(7).uniform(-scale, scale, PARAMS).astype(np.float32)


def _optimizer(name: str) -> ServerOptimizer:
    return FedAvg() if name == "fedavg" else FedAdam()


def _undo_step(name: str, w: np.ndarray, w_next: np.ndarray) -> np.ndarray:
    """The average update the operator infers from two published models."""
    step = w_next.astype(np.float64) - w.astype(np.float64)
    if name == "fedavg":
        return step
    # FedAdam's first step from m = 0, v = τ²: r = a·d / (sqrt(β2·τ² + b·d²) + τ) with
    # a = 1 − β1, b = 1 − β2; squaring gives (a² − b·r²)·d² − 2·a·r·τ·d + b·r²·τ² = 0.
    a, b, tau = 1.0 - FEDADAM.beta1, 1.0 - FEDADAM.beta2, FEDADAM.tau
    r = step / FEDADAM.lr
    return r * tau * (a + np.sqrt(a * a - (a * a - b * r * r) * b)) / (a * a - b * r * r)


def _publish_and_attack(
    keys: BuyerKeys,
    public: PublicContext,
    acc: Accumulator,
    agg: DecryptedAggregate,
    name: str,
    scale: float,
) -> Recovery:
    w = _global_model(scale)
    w_next = _optimizer(name).step(w, agg.average)
    return _recover_key(keys, public, acc, _undo_step(name, w, w_next) * acc.weight_sum)


def _exact(keys: BuyerKeys, acc: Accumulator) -> DecryptedAggregate:
    """What decryption gave before flooding: the exact sum, as float32."""
    return DecryptedAggregate(
        total=_decrypt_exact(keys, acc).astype(np.float32),
        count=acc.count,
        weight_sum=acc.weight_sum,
        samples_sum=acc.samples_sum,
        provider_ids=acc.provider_ids,
    )


def test_exact_decryption_leaks_the_secret_key(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator
) -> None:
    """An exact decrypted sum, once public, gives the operator the buyer's secret key."""
    found = _recover_key(keys, public, round_aggregate, _decrypt_exact(keys, round_aggregate))
    assert found.equals_key and found.matches == public.preset.poly_modulus_degree


@pytest.mark.parametrize("scale", SCALES[:3])
@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_exact_decryption_leaks_through_the_optimizer(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator, name: str, scale: float
) -> None:
    """Without flooding, the next global model alone is enough to recover the key."""
    exact = _exact(keys, round_aggregate)
    found = _publish_and_attack(keys, public, round_aggregate, exact, name, scale)
    assert found.equals_key, found


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_published_model_does_not_reveal_the_key(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator, name: str, scale: float
) -> None:
    """Through decrypt_aggregate and the optimizer the operator is ≥ 25 rms per coefficient off."""
    agg = decrypt_aggregate(keys, round_aggregate.to_bytes())
    found = _publish_and_attack(keys, public, round_aggregate, agg, name, scale)
    print(f"{name} scale={scale}: {found}")
    assert not found.equals_key
    assert found.matches < public.preset.poly_modulus_degree // 100
    assert found.residual_rms >= RESIDUAL_FLOOR


@pytest.mark.parametrize("preset_id", ["ckks-add-2048-v1", "ckks-add-4096-v1"])
def test_flood_sigma_gives_the_coefficient_rms(preset_id: str) -> None:
    """iid N(0, σ²) per real, encoded by SEAL, has coefficient std σ·Δ/sqrt(N/2) = the target."""
    keys = BuyerKeys.generate(preset_id)
    preset = keys.preset
    noise = preset.flood_sigma * standard_normal(preset.poly_modulus_degree)
    coeffs = _to_coefficients(keys, _encode(keys.public_context(), noise)).astype(np.float64)
    assert preset.flood_sigma == pytest.approx(
        preset.flood_coeff_rms * np.sqrt(preset.poly_modulus_degree / 2) / preset.scale
    )
    assert abs(coeffs.mean()) < 0.1 * preset.flood_coeff_rms
    assert np.sqrt(np.mean(coeffs**2)) == pytest.approx(preset.flood_coeff_rms, rel=0.08)


def test_every_decryption_carries_fresh_noise(
    keys: BuyerKeys, round_aggregate: Accumulator
) -> None:
    """Two decryptions of one sum differ by σ·sqrt(2) per value, whatever numpy's seed is."""
    exact = _decrypt_exact(keys, round_aggregate)
    blob = round_aggregate.to_bytes()
    np.random.seed(0)
    first = decrypt_aggregate(keys, blob).total.astype(np.float64)
    np.random.seed(0)
    second = decrypt_aggregate(keys, blob).total.astype(np.float64)
    sigma = keys.preset.flood_sigma
    assert np.std(first - exact) == pytest.approx(sigma, rel=0.1)
    assert np.std(first - second) == pytest.approx(sigma * np.sqrt(2), rel=0.1)
    assert np.max(np.abs(first - exact)) < 1e-5


def test_flooding_cannot_be_turned_down() -> None:
    """Every encrypting preset floods at ≥ 8× the RLWE error; a weaker preset is refused."""
    for preset in PRESETS.values():
        assert preset.is_plain or preset.flood_coeff_rms >= RESIDUAL_FLOOR
    with pytest.raises(PresetError, match="floods decryptions"):
        Preset(
            id="ckks-weak",
            poly_modulus_degree=2048,
            coeff_mod_bit_sizes=(40, 14),
            scale_bits=31,
            default_summands=16,
            flood_coeff_rms=3.2,
        )


def test_buyer_keys_expose_no_raw_decryptor(keys: BuyerKeys) -> None:
    """No public attribute of BuyerKeys decrypts: decrypt_aggregate is the only way in."""
    public = [getattr(keys, name) for name in dir(keys) if not name.startswith("_")]
    assert not any(isinstance(attr, seal.Decryptor) for attr in public)


def test_aggregate_cannot_claim_a_weaker_preset(keys: BuyerKeys) -> None:
    """An aggregate relabelled with another CKKS preset (other flooding) is refused."""
    other = BuyerKeys.generate("ckks-add-4096-v1").public_context()
    binding = EnvelopeBinding("j", 1, "p0", 100, 2)
    acc = Accumulator.empty(other, job_id="j", round=1, param_count=100, summands=2)
    env = encrypt_update(other, np.zeros(100), binding=binding, weight=1.0, samples=1)
    acc.add(validate_envelope(env, other, binding))
    acc.fingerprint = keys.fingerprint
    with pytest.raises(AggregateError, match="claims preset"):
        decrypt_aggregate(keys, acc.to_bytes())
